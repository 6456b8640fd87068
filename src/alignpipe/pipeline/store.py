"""The versioned artifact store: immutable content-addressed directories with a manifest, refs and tags.

Layout of a workspace:
    artifacts/<id>/            the files, plus manifest.json (model artifacts are plain HF directories)
    refs/<fingerprint>.json    which artifacts a stage fingerprint produced: the cache index, written last
    tags/<name>                a named version (the artifact id)
    work/<fingerprint>/        a running stage's checkpoints and output staging (kept across attempts)
    logs/<run>/<stage>-<n>.log stage logs
    .alignpipe/journal.db      the SQLite journal (see journal.py)

Publishing is atomic: files are written and hashed in a staging directory, the manifest is written last, and
the directory is renamed into artifacts/. A kill at any instant leaves either no artifact or a complete one.
An artifact id is sha256 over the sorted (path, sha256) list of its files, so identical content has one id;
the manifest kept is the first producer's.

A workspace in a bucket (any fsspec URI, pipeline/fs.py) has the same layout without the machine-local parts
(work dirs, attempt files, local logs: under the machine's cache, pipeline/cache.py). There is no rename there:
publishing uploads the files under artifacts/<id>/ first and creates the manifest last with a conditional PUT, and
an artifact exists for a reader only once its manifest does. Uploads a crash abandoned have no manifest; `gc`
removes them after a grace period. Refs and tags are single-object PUTs (atomic replace).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.fs import LocalFS, ObjectFS, fsync_dir, open_fs, write_atomic

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def fsync_tree(root: Path) -> None:
    """Flush every file and directory under root to disk (before a rename publishes them)."""
    for dirpath, _, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def list_files(root: Path) -> list[str]:
    """Relative POSIX paths of the payload files (manifest excluded), sorted."""
    out = []
    for dirpath, _, files in os.walk(root):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")
            if rel != MANIFEST:
                out.append(rel)
    return sorted(out)


def hash_tree(root: Path) -> tuple[str, list[dict[str, Any]]]:
    """(content id, file entries) of a directory or a single file."""
    if root.is_file():
        entries = [{"path": root.name, "size": root.stat().st_size, "sha256": sha256_file(root)}]
    else:
        entries = [{"path": rel, "size": (root / rel).stat().st_size, "sha256": sha256_file(root / rel)}
                   for rel in list_files(root)]
    return listing_id(entries), entries


class CorruptArtifact(UserError):
    """An artifact whose manifest cannot be read: `verify` and `artifacts` report it; a run recomputes it."""


class MissingArtifact(UserError):
    """No artifact with that id in the store (never published, or gc removed it)."""


class DamagedRef(UserError):
    """A cache ref (refs/<fingerprint>.json) that cannot be read: the runner ignores it and recomputes."""


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of artifact directory `path`; FileNotFoundError if none, CorruptArtifact if unreadable."""
    f = path / MANIFEST
    try:
        data = f.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise CorruptArtifact(f"{f}: unreadable manifest ({type(e).__name__}: {e}); rerun the pipeline to "
                              "recompute this artifact (`alignpipe run` replaces a corrupt cached artifact)") from None
    return parse_manifest(data, str(f))


def parse_manifest(data: bytes, where: str) -> dict[str, Any]:
    try:
        manifest = json.loads(data.decode("utf-8"))
    except ValueError as e:  # bad JSON or not UTF-8
        raise CorruptArtifact(f"{where}: unreadable manifest ({type(e).__name__}: {e}); rerun the pipeline to "
                              "recompute this artifact (`alignpipe run` replaces a corrupt cached artifact)") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise CorruptArtifact(f"{where}: not an artifact manifest (no 'files' list); rerun the pipeline to recompute "
                              "this artifact")
    return manifest


# ---------------------------------------------------------------------------------------------------------------
# where a workspace may live

WORKSPACE_MARKERS = (".alignpipe", "artifacts", "refs")


REMOTE_SCHEMES = ("s3", "gs", "gcs", "memory", "az", "abfs")  # fsspec backends a workspace may live on
WORKSPACE_OBJECT = "alignpipe-workspace.json"  # marks a bucket prefix as a workspace (created on first use)


def workspace_location(ws: str | os.PathLike, base: Path) -> Path | str:
    """The workspace a setting names: a local directory (relative to `base`), or an fsspec URI of an object store
    (s3://bucket/prefix, gs://..., memory://...). Other URIs are refused instead of becoming a local folder named
    'http:'."""
    text = os.path.expanduser(str(ws))
    if text.startswith("file://"):
        text = text[len("file://"):]
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme not in REMOTE_SCHEMES:
            raise UserError(f"workspace {str(ws)!r}: the store serves local directories and object stores "
                            f"({', '.join(f'{s}://' for s in REMOTE_SCHEMES)}), not {scheme}:// URIs")
        if not rest.strip("/"):
            raise UserError(f"workspace {str(ws)!r}: name a bucket (and optionally a prefix), e.g. "
                            f"{scheme}://my-bucket/alignpipe")
        return f"{scheme}://{rest.rstrip('/')}"
    p = Path(text)
    return (p if p.is_absolute() else base / p).resolve()


def check_workspace(store: Store) -> None:
    """Refuse, before anything is written, a workspace that cannot be one: locally a file, a directory that is
    not writable or holds something else; in a bucket a missing bucket, denied access, an unreachable endpoint
    (one-line errors from the file interface) or a prefix holding something else. A bucket prefix is marked as a
    workspace on first use."""
    if not store.remote:
        check_workspace_writable(store.root)
        return
    if workspace_marker(store.fs) is not None:  # a workspace already: one request says the bucket is there too
        return
    store.fs.check_root()
    entries = store.fs.listdir("")
    if entries and WORKSPACE_OBJECT not in entries:
        shown = ", ".join(entries[:3]) + (", ..." if len(entries) > 3 else "")
        raise UserError(f"workspace {store.root}: the prefix holds other objects ({shown}) and no alignpipe "
                        "workspace; pass a new or empty prefix as --workspace")
    if not entries:
        write_workspace_marker(store.fs, {"alignpipe_workspace": SCHEMA_VERSION}, create=True)


_MARKERS: dict[str, dict[str, Any] | None] = {}  # bucket workspace URL -> its marker object, read once per process


def workspace_marker(fs: ObjectFS) -> dict[str, Any] | None:
    """The object that marks a bucket prefix as a workspace (and records its journal), or None."""
    if fs.url() not in _MARKERS:
        try:
            data = json.loads(fs.read_bytes(WORKSPACE_OBJECT))
            _MARKERS[fs.url()] = data if isinstance(data, dict) else {}
        except (FileNotFoundError, UserError):  # absent, or the bucket unreachable: check_root says which
            return None
        except ValueError:
            _MARKERS[fs.url()] = {}
    return _MARKERS[fs.url()]


def write_workspace_marker(fs: ObjectFS, data: dict[str, Any], create: bool = False) -> None:
    body = json.dumps(data).encode()
    if create:
        fs.create(WORKSPACE_OBJECT, body)
    else:
        fs.write_bytes(WORKSPACE_OBJECT, body)
    _MARKERS.pop(fs.url(), None)


def check_workspace_writable(root: Path) -> None:
    """Refuse, before anything is written, a workspace that is a file, not writable, or a directory that holds
    other things than an alignpipe workspace."""
    if root.exists() and not root.is_dir():
        raise UserError(f"workspace {root}: is a file, not a directory; pass --workspace DIR (a new or existing "
                        "workspace directory)")
    if root.is_dir():
        if not os.access(root, os.W_OK | os.X_OK):
            raise UserError(f"workspace {root}: not writable by this user; fix its permissions or pass another "
                            "--workspace")
        entries = set(os.listdir(root))
        if entries and not entries & set(WORKSPACE_MARKERS):
            shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
            raise UserError(f"workspace {root}: holds other files ({shown}) and no alignpipe workspace; pass a new "
                            "or empty directory as --workspace")
        return
    parent = root.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"workspace {root}: {parent} is a file, so no directory can be made under it; pass another "
                        "--workspace")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"workspace {root}: cannot create it, {parent} is not writable by this user; pass another "
                        "--workspace")


@dataclass(frozen=True)
class Artifact:
    id: str
    path: Path
    manifest: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.manifest.get("kind", "artifact")

    @property
    def producer(self) -> dict[str, Any]:
        return self.manifest.get("producer", {})


CHECK_LEVELS = ("size", "stat", "full")


def seal_stamp_ns(created: float) -> int:
    """The mtime every file of an artifact is given when it is sealed: its manifest's `created`, in whole µs (what
    a JSON float carries exactly). A file whose mtime differs was written after sealing."""
    return round(created * 1e6) * 1000


def _stamped(mtime_ns: int, stamp: int) -> bool:
    return mtime_ns in (stamp, stamp // 10**9 * 10**9)  # the second form: file systems that keep whole seconds


def listing_id(entries: list[dict[str, Any]]) -> str:
    """The content id of a file list: sha256 over its sorted (path, sha256) lines."""
    listing = "\n".join(f"{e['path']}\t{e['sha256']}" for e in entries)
    return hashlib.sha256(listing.encode()).hexdigest()


def check_files(path: Path, manifest: dict[str, Any], level: str = "size", art_id: str | None = None) -> list[str]:
    """Problems with an artifact directory against its manifest (and, given `art_id`, the manifest against the
    id: its file list must hash to it). Levels, cheapest first:
    - size: every listed file is there with its recorded size, and no file is extra;
    - stat: size, plus any file written after the artifact was sealed (its mtime is not the seal stamp) is
      re-hashed; if its content is intact it gets the stamp back, so the next check is cheap again;
    - full: every file re-hashed.
    """
    problems = []
    files = manifest.get("files", [])
    if art_id is not None and (manifest.get("id") != art_id or listing_id(files) != art_id):
        problems.append(f"{MANIFEST}: does not describe artifact {art_id[:12]} (its id or file list was edited)")
    stamp = seal_stamp_ns(float(manifest.get("created", 0)))
    listed = {e["path"] for e in files}
    for e in files:
        f = path / e["path"]
        try:
            st = f.stat()
        except OSError:
            problems.append(f"{e['path']}: missing")
            continue
        if st.st_size != e["size"]:
            problems.append(f"{e['path']}: size {st.st_size} != {e['size']} recorded")
        elif level == "full" or (level == "stat" and not _stamped(st.st_mtime_ns, stamp)):
            if sha256_file(f) != e["sha256"]:
                problems.append(f"{e['path']}: content changed (sha256 mismatch)")
            elif level == "stat":
                _restamp(f, st.st_atime_ns, stamp)
    problems.extend(f"{rel}: not in the manifest" for rel in list_files(path) if rel not in listed)
    return problems


def _restamp(f: Path, atime_ns: int, stamp: int) -> None:
    """Give a file the seal stamp as mtime (at sealing; and after a re-hash found it intact, so a copy that did
    not keep mtimes is checked in full once, then cheaply)."""
    try:
        os.utime(f, ns=(atime_ns, stamp))
    except OSError:
        pass  # not ours to touch (read-only store): it is re-hashed next time instead


def seal(staging: Path, meta: dict[str, Any], hashed: tuple[str, list[dict[str, Any]]] | None = None,
         sync: bool = True) -> dict[str, Any]:
    """Hash a finished output directory (unless `hashed` is its hash_tree already) and write its manifest, last:
    the payload is fsynced first, so once the manifest exists (even after a power loss) the files it lists are
    on disk. `sync=False` leaves the payload's fsync to the caller (a bucket publish does it while uploading, before
    the directory becomes a cache entry). Returns the manifest."""
    art_id, files = hashed or hash_tree(staging)
    manifest = {"id": art_id, **meta, "files": files, "created": time.time(), "schema_version": SCHEMA_VERSION}
    stamp = seal_stamp_ns(manifest["created"])
    for e in files:
        f = staging / e["path"] if staging.is_dir() else staging
        _restamp(f, f.stat().st_atime_ns, stamp)
    if sync:
        fsync_tree(staging)
    LocalFS(staging).write_bytes(MANIFEST, manifest_bytes(manifest))
    return manifest


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, indent=1, sort_keys=True).encode()


PARTIAL_GRACE_S = 24 * 3600  # gc removes an upload without its manifest once it is this old (a publish crashed)


class Store:
    """The artifact store of a workspace: a local directory (`root` a path) or a bucket (`root` an fsspec URI).

    `state`: this machine's part of the workspace (work dirs, attempt files, local stage logs): the workspace
    directory itself when it is local, a directory under the cache (ALIGNPIPE_CACHE) for a bucket.
    """

    def __init__(self, root: str | os.PathLike, fs: LocalFS | ObjectFS | None = None):
        self.fs = fs or open_fs(root)
        self.remote = not self.fs.is_local
        if self.remote:
            from alignpipe.pipeline.cache import ArtifactCache, state_dir

            self.root: Path | str = self.fs.url()
            self.state = state_dir(self.fs.url())
            self.cache: ArtifactCache | None = ArtifactCache()
        else:
            self.root = Path(self.fs.url())
            self.state = self.root
            self.cache = None
        self._manifests: dict[str, Artifact] = {}
        self.artifacts_dir = self.state / "artifacts"  # local workspaces only: where artifact directories live
        self.work_root = self.state / "work"
        self.logs_root = self.state / "logs"
        self.quarantine_dir = self.state / "quarantine"

    def ensure(self) -> Store:
        for d in (self.work_root, self.logs_root, *(() if self.remote else (self.artifacts_dir,))):
            d.mkdir(parents=True, exist_ok=True)
        return self

    # -- publish ----------------------------------------------------------------------------------------------
    def publish(self, staging: Path, meta: dict[str, Any]) -> Artifact:
        """Seal `staging` and put it into the store (consumes staging). Locally one atomic rename; in a bucket the
        files are uploaded first and the manifest created last, conditionally: whoever creates it first wins and
        identical content published twice at once ends as one intact artifact."""
        hashed = hash_tree(staging)
        if self.has(hashed[0]):  # identical content already published: keep the first
            shutil.rmtree(staging, ignore_errors=True)
            return self.get(hashed[0])
        return self.put_sealed(staging, seal(staging, meta, hashed, sync=not self.remote))

    def put_sealed(self, staging: Path, manifest: dict[str, Any]) -> Artifact:
        """Put a directory whose files `manifest` describes (its manifest.json written here if missing) into the
        store as that artifact; consumes `staging`. Publishing and imports from other workspaces end here. For a
        bucket, a staging directory that came with its manifest is fsynced while it uploads (a publish leaves
        that to here), before it becomes this machine's cache entry."""
        art_id = manifest["id"]
        synced = not (staging / MANIFEST).exists()
        if synced:
            fsync_tree(staging)
            LocalFS(staging).write_bytes(MANIFEST, manifest_bytes(manifest))
        if self.remote:
            rel = f"artifacts/{art_id}"
            with ThreadPoolExecutor(1) as pool:  # the local copy reaches the disk while the upload runs
                fsynced = pool.submit(lambda: synced or fsync_tree(staging))
                self.fs.put_files((staging / e["path"], f"{rel}/{e['path']}") for e in manifest["files"])
                if not self.fs.create(f"{rel}/{MANIFEST}", manifest_bytes(manifest)):
                    manifest = self.get(art_id).manifest  # another machine published the same content meanwhile
                fsynced.result()
            self.cache.add(art_id, staging)  # this machine has the files already: no download to read them
            return Artifact(art_id, self.cache.path(art_id), manifest)
        final = self.artifacts_dir / art_id
        if self.has(art_id):
            shutil.rmtree(staging, ignore_errors=True)
            return self.get(art_id)
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        if final.exists():  # a leftover without manifest: not an artifact, replace it
            shutil.rmtree(final, ignore_errors=True)
        os.rename(staging, final)
        fsync_dir(final.parent)
        return Artifact(art_id, final, manifest)

    # -- lookup ------------------------------------------------------------------------------------------------
    def get(self, art_id: str) -> Artifact:
        """The artifact's manifest; `path` is its directory (in a bucket: where the local copy lives once
        `local_dir` fetched it). A bucket's manifests are read once per Store (an artifact never changes)."""
        if art_id in self._manifests:
            return self._manifests[art_id]
        if self.remote:  # immutable, so this machine keeps a copy of each manifest it has read
            kept = self.cache.root / "manifests" / f"{art_id}.json"
            try:
                art = Artifact(art_id, self.cache.path(art_id), parse_manifest(kept.read_bytes(), str(kept)))
            except (OSError, CorruptArtifact):
                art = self._read(art_id)
                write_atomic(kept, manifest_bytes(art.manifest))
            self._manifests[art_id] = art
            return art
        return self._read(art_id)

    def _read(self, art_id: str) -> Artifact:
        rel = f"artifacts/{art_id}/{MANIFEST}"
        try:
            data = self.fs.read_bytes(rel)
        except FileNotFoundError:
            raise MissingArtifact(f"{self.root}: no artifact {art_id!r} in this workspace's store") from None
        except (OSError, UserError) as e:
            raise CorruptArtifact(f"{self.fs.url(rel)}: unreadable manifest ({e}); rerun the pipeline to recompute "
                                  "this artifact") from None
        manifest = parse_manifest(data, self.fs.url(rel))
        return Artifact(art_id, self.cache.path(art_id) if self.remote else self.artifacts_dir / art_id, manifest)

    def local_dir(self, art_id: str) -> Path:
        """A local directory holding the artifact's files (for a bucket: the verified copy in the cache)."""
        return self.cache.fetch(self, art_id) if self.remote else self.artifacts_dir / art_id

    def get_or_corrupt(self, art_id: str) -> Artifact:
        """get(), but an unreadable manifest gives an Artifact of kind 'corrupt' with the problem in `problem`."""
        try:
            return self.get(art_id)
        except CorruptArtifact as e:
            return Artifact(art_id, self.artifacts_dir / art_id, {"kind": "corrupt", "problem": str(e), "files": []})

    def has(self, art_id: str) -> bool:
        return self.fs.exists(f"artifacts/{art_id}/{MANIFEST}")

    def ids(self) -> list[str]:
        if self.remote:  # one listing instead of a request per artifact
            return sorted({p.split("/", 1)[0] for p in self.fs.find("artifacts") if p.endswith(f"/{MANIFEST}")
                           and p.count("/") == 1})
        return [d for d in self.fs.listdir("artifacts") if self.has(d)]

    def all(self) -> list[Artifact]:
        """Every artifact, oldest first; corrupt ones (unreadable manifest) are listed with kind 'corrupt'."""
        return sorted((self.get_or_corrupt(i) for i in self.ids()), key=lambda a: a.manifest.get("created", 0))

    def resolve_id(self, ref: str) -> str:
        """An artifact id from a full id, a unique id prefix (≥ 4 chars) or a tag."""
        if "/" not in ref and self.has(ref):
            return ref
        if _valid_tag(ref) and self.fs.exists(f"tags/{ref}"):
            return self.fs.read_bytes(f"tags/{ref}").decode(errors="replace").strip()
        if len(ref) >= 4:
            hits = [i for i in self.ids() if i.startswith(ref)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise UserError(f"artifact prefix {ref!r} is ambiguous ({len(hits)} matches); give more characters")
        newest = self._newest_output(ref)
        if newest:
            return newest
        raise UserError(f"{self.root}: {ref!r} is no artifact id, id prefix, tag or stage.output in this workspace")

    def _newest_output(self, ref: str) -> str | None:
        """`stage.output` by the manifests alone (no journal at hand, e.g. another machine's bucket workspace):
        the newest artifact that output produced."""
        from alignpipe.pipeline.matrix import split_ref

        stage, output = split_ref(ref)
        made = [a for a in self.all() if a.producer.get("stage") == stage]
        if output:
            made = [a for a in made if a.producer.get("output") == output]
        elif len({a.producer.get("output") for a in made}) > 1:
            raise UserError(f"stage {stage!r} made several outputs; name one as {stage}.OUTPUT")
        return made[-1].id if made else None

    # -- the cache index ---------------------------------------------------------------------------------------
    def ref_path(self, fp: str) -> str:
        return f"refs/{fp}.json"

    def lookup(self, fp: str) -> dict[str, str] | None:
        """Outputs (name -> id) a fingerprint produced, if all of them are still in the store. A ref that cannot
        be read raises DamagedRef (the caller recomputes; publishing rewrites the ref)."""
        try:
            outputs = self._ref_outputs(self.ref_path(fp))
        except FileNotFoundError:
            return None
        if self.remote:  # a request per output saved: the caller's check reads each manifest anyway
            return outputs
        return outputs if all(self.has(i) for i in outputs.values()) else None

    def _ref_outputs(self, rel: str) -> dict[str, str]:
        try:
            outputs = json.loads(self.fs.read_bytes(rel))["outputs"]
            if isinstance(outputs, dict) and all(isinstance(v, str) for v in outputs.values()):
                return outputs
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, TypeError):
            pass
        raise DamagedRef(f"{self.fs.url(rel)}: unreadable cache ref; ignored, the stage is recomputed and the ref "
                         "rewritten")

    def record(self, fp: str, outputs: dict[str, str], stage: str) -> None:
        self.fs.write_bytes(self.ref_path(fp), json.dumps({"outputs": outputs, "stage": stage}).encode())

    def refs(self) -> dict[str, dict[str, str]]:
        """fingerprint -> outputs of every readable ref (a damaged one maps to {}: gc removes it)."""
        out = {}
        for f in self.fs.listdir("refs"):
            if f.endswith(".json"):
                try:
                    out[f[:-5]] = self._ref_outputs(f"refs/{f}")
                except (DamagedRef, FileNotFoundError):
                    out[f[:-5]] = {}
        return out

    # -- tags --------------------------------------------------------------------------------------------------
    def tag(self, name: str, ref: str) -> str:
        if not _valid_tag(name):
            raise UserError(f"tag name {name!r} is invalid; use letters, digits, '-', '_' or '.'")
        art_id = self.resolve_id(ref)
        self.fs.write_bytes(f"tags/{name}", (art_id + "\n").encode())
        return art_id

    def tags(self) -> dict[str, str]:
        return {t: self.fs.read_bytes(f"tags/{t}").decode(errors="replace").strip() for t in self.fs.listdir("tags")
                if not t.startswith(".")}

    # -- integrity ---------------------------------------------------------------------------------------------
    def verify(self, art_id: str, level: str = "full") -> list[str]:
        """Problems with an artifact at a check_files level; an unreadable manifest is one. In a bucket, sizes
        come from one listing and `full` re-hashes a fresh download."""
        try:
            a = self.get(art_id)
        except CorruptArtifact as e:
            return [str(e)]
        if not self.remote:
            return check_files(a.path, a.manifest, level=level, art_id=art_id)
        return self._verify_remote(a, level)

    def _verify_remote(self, a: Artifact, level: str) -> list[str]:
        """size: one listing against the manifest. stat: also re-hash any object written after the manifest was
        (publishing creates the manifest last, so a newer object was overwritten since). full: re-hash all."""
        listing = self.fs.find(f"artifacts/{a.id}")
        if MANIFEST not in listing:  # removed from the bucket (gc) since this machine read its manifest
            self._manifests.pop(a.id, None)
            raise MissingArtifact(f"{self.root}: no artifact {a.id!r} in this workspace's store")
        sealed = listing[MANIFEST].modified
        listed = {k: v for k, v in listing.items() if k != MANIFEST}
        files = a.manifest["files"]
        problems = [] if a.manifest.get("id") == a.id and listing_id(files) == a.id else [
            f"{MANIFEST}: does not describe artifact {a.id[:12]} (its id or file list was edited)"]
        for e in files:
            if e["path"] not in listed:
                problems.append(f"{e['path']}: missing")
            elif listed[e["path"]].size != e["size"]:
                problems.append(f"{e['path']}: size {listed[e['path']].size} != {e['size']} recorded")
        problems += [f"{rel}: not in the manifest" for rel in sorted(set(listed) - {e["path"] for e in files})]
        rehash = [e for e in files if e["path"] in listed and (
            level == "full" or (level == "stat" and listed[e["path"]].modified > sealed))]
        if rehash and not problems:
            with tempfile.TemporaryDirectory(dir=self.state if self.state.exists() else None) as tmp:
                self.fs.get_files((f"artifacts/{a.id}/{e['path']}", Path(tmp) / e["path"]) for e in rehash)
                problems = [f"{e['path']}: content changed (sha256 mismatch)" for e in rehash
                            if sha256_file(Path(tmp) / e["path"]) != e["sha256"]]
        return problems

    def quarantine(self, art_id: str, problems: list[str]) -> str:
        """Take a corrupt artifact out of the store, keeping it for a look in quarantine/<id>-<time>/ with the
        problems found; `gc` removes it. Locally one rename; in a bucket the manifest goes first (the artifact
        is gone for every reader), then the files move. Returns where it went."""
        name = f"{art_id}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        note = ("\n".join(problems) + "\n").encode()
        if self.remote:
            self._manifests.pop(art_id, None)
            self.fs.remove(f"artifacts/{art_id}/{MANIFEST}")
            for rel in self.fs.find(f"artifacts/{art_id}"):
                self.fs.move(f"artifacts/{art_id}/{rel}", f"quarantine/{name}/{rel}")
            self.fs.write_bytes(f"quarantine/{name}/QUARANTINED.txt", note)
            return self.fs.url(f"quarantine/{name}")
        dest = self.quarantine_dir / name
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        os.rename(self.artifacts_dir / art_id, dest)
        fsync_dir(self.quarantine_dir)
        (dest / "QUARANTINED.txt").write_bytes(note)
        return str(dest)

    # -- lineage -----------------------------------------------------------------------------------------------
    def lineage(self, art_id: str) -> dict[str, Any]:
        """The upstream graph as a nested dict down to external inputs."""
        a = self.get(self.resolve_id(art_id))
        node: dict[str, Any] = {"id": a.id, "kind": a.kind, "stage": a.producer.get("stage"),
                                "uses": a.producer.get("uses"), "output": a.producer.get("output"), "inputs": {}}
        for name, inp in a.manifest.get("inputs", {}).items():
            if inp.get("external"):
                node["inputs"][name] = {"id": inp["id"], "external": inp["external"]}
            elif self.has(inp["id"]):
                node["inputs"][name] = self.lineage(inp["id"])
            else:
                node["inputs"][name] = {"id": inp["id"], "missing": True}
        return node

    def closure(self, ids: set[str]) -> set[str]:
        keep, todo = set(), list(ids)
        while todo:
            i = todo.pop()
            if i in keep or not self.has(i):
                continue
            keep.add(i)
            inputs = self.get_or_corrupt(i).manifest.get("inputs", {})
            todo.extend(v["id"] for v in inputs.values() if isinstance(v, dict) and not v.get("external"))
        return keep

    # -- garbage collection ------------------------------------------------------------------------------------
    def gc(self, keep: set[str], dry_run: bool, busy_work: set[str]) -> dict[str, list[str]]:
        """Remove artifacts outside keep's lineage closure, refs to them, finished or orphaned work dirs,
        quarantined copies, and (in a bucket) uploads a crashed publish left without a manifest for longer than
        PARTIAL_GRACE_S."""
        keep = self.closure(keep | set(self.tags().values()))
        ids = set(self.ids())
        dead = sorted(ids - keep)
        partial = self._abandoned_uploads(ids) if self.remote else []
        refs = self.refs()
        dead_refs = [fp for fp, outs in refs.items() if not outs or any(i not in keep for i in outs.values())]
        work = os.listdir(self.work_root) if self.work_root.is_dir() else []
        dead_work = [w for w in work if w not in busy_work
                     and (w in refs or w in dead_refs or not (self.work_root / w / "ckpt").exists())]
        quarantined = self.fs.listdir("quarantine")
        if not dry_run:
            for fp in dead_refs:
                self.fs.remove(self.ref_path(fp))
            for i in dead:
                self._manifests.pop(i, None)
                self.fs.remove(f"artifacts/{i}/{MANIFEST}")  # first: the artifact is gone for every reader
                self.fs.rmtree(f"artifacts/{i}")
            for i in partial:
                self.fs.rmtree(f"artifacts/{i}")
            for w in dead_work:
                shutil.rmtree(self.work_root / w, ignore_errors=True)
            for q in quarantined:
                self.fs.rmtree(f"quarantine/{q}")
        return {"artifacts": dead + partial, "refs": dead_refs, "work": dead_work, "quarantine": quarantined}

    def _abandoned_uploads(self, published: set[str]) -> list[str]:
        newest: dict[str, float] = {}
        for rel, entry in self.fs.find("artifacts").items():
            art = rel.split("/", 1)[0]
            if art not in published:
                newest[art] = max(newest.get(art, 0.0), entry.modified)
        return sorted(a for a, t in newest.items() if time.time() - t > PARTIAL_GRACE_S)


def _valid_tag(name: str) -> bool:
    return bool(name) and "/" not in name and not name.startswith(".")


# ---------------------------------------------------------------------------------------------------------------
# stage logs: written locally by the machine that runs the stage, mirrored into a bucket workspace as they grow


def log_key(log_path: str | os.PathLike) -> str:
    """A local stage log's key in the workspace: logs/<run>/<stage>-<attempt>.log."""
    p = Path(log_path)
    return f"logs/{p.parent.name}/{p.name}"


def read_log(store: Store, log_path: str | os.PathLike) -> str:
    """A stage attempt's log: the local file where this machine ran it, else the workspace's mirror."""
    local = Path(log_path)
    if local.is_file():
        return local.read_text(errors="replace")
    if store.remote:
        try:
            return store.fs.read_bytes(log_key(local)).decode(errors="replace")
        except FileNotFoundError:
            pass
    raise UserError(f"{store.root}: the log {log_key(local)} is not here (it was written on another machine "
                    "and not mirrored)")
