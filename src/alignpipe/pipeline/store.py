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
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignpipe.pipeline.errors import UserError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
_CHUNK = 1 << 20


# ---------------------------------------------------------------------------------------------------------------
# file access: the one small interface (local now; an fsspec-backed twin can slot in for remote workspaces)


class LocalFS:
    def exists(self, p: Path) -> bool:
        return p.exists()

    def read_text(self, p: Path) -> str:
        return p.read_text(encoding="utf-8")

    def write_text_atomic(self, p: Path, text: str) -> None:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
        fsync_dir(p.parent)

    def listdir(self, p: Path) -> list[str]:
        return sorted(os.listdir(p)) if p.is_dir() else []

    def rename(self, src: Path, dst: Path) -> None:
        os.rename(src, dst)
        fsync_dir(dst.parent)

    def rmtree(self, p: Path) -> None:
        shutil.rmtree(p, ignore_errors=True)


def fsync_dir(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


class DamagedRef(UserError):
    """A cache ref (refs/<fingerprint>.json) that cannot be read: the runner ignores it and recomputes."""


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of artifact directory `path`; FileNotFoundError if none, CorruptArtifact if unreadable."""
    f = path / MANIFEST
    try:
        manifest = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as e:  # ValueError: bad JSON or not UTF-8
        raise CorruptArtifact(f"{f}: unreadable manifest ({type(e).__name__}: {e}); rerun the pipeline to "
                              "recompute this artifact (`alignpipe run` replaces a corrupt cached artifact)") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        raise CorruptArtifact(f"{f}: not an artifact manifest (no 'files' list); rerun the pipeline to recompute "
                              "this artifact")
    return manifest


# ---------------------------------------------------------------------------------------------------------------
# where a workspace may live

WORKSPACE_MARKERS = (".alignpipe", "artifacts", "refs")


def workspace_location(ws: str | os.PathLike, base: Path) -> Path:
    """The local directory a workspace setting names (relative to `base`); URIs the store cannot serve are refused
    instead of becoming a local folder named 's3:'."""
    text = os.path.expanduser(str(ws))
    if text.startswith("file://"):
        text = text[len("file://"):]
    scheme, sep, _ = text.partition("://")
    if sep:
        raise UserError(f"workspace {str(ws)!r}: the store serves local directories only, not {scheme}:// URIs; "
                        "give a local path (or sync the bucket to one)")
    p = Path(text)
    return p if p.is_absolute() else base / p


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


def seal(staging: Path, meta: dict[str, Any], fs: LocalFS | None = None,
         hashed: tuple[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Hash a finished output directory (unless `hashed` is its hash_tree already) and write its manifest, last:
    the payload is fsynced first, so once the manifest exists (even after a power loss) the files it lists are
    on disk. Returns the manifest."""
    art_id, files = hashed or hash_tree(staging)
    manifest = {"id": art_id, **meta, "files": files, "created": time.time(), "schema_version": SCHEMA_VERSION}
    stamp = seal_stamp_ns(manifest["created"])
    for e in files:
        f = staging / e["path"] if staging.is_dir() else staging
        _restamp(f, f.stat().st_atime_ns, stamp)
    fsync_tree(staging)
    (fs or LocalFS()).write_text_atomic(staging / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


class Store:
    def __init__(self, root: str | os.PathLike, fs: LocalFS | None = None):
        self.root = Path(root)
        self.fs = fs or LocalFS()
        self.artifacts_dir = self.root / "artifacts"
        self.refs_dir = self.root / "refs"
        self.tags_dir = self.root / "tags"
        self.work_root = self.root / "work"
        self.logs_root = self.root / "logs"
        self.quarantine_dir = self.root / "quarantine"

    def ensure(self) -> Store:
        for d in (self.artifacts_dir, self.refs_dir, self.tags_dir, self.work_root, self.logs_root):
            d.mkdir(parents=True, exist_ok=True)
        return self

    # -- publish ----------------------------------------------------------------------------------------------
    def publish(self, staging: Path, meta: dict[str, Any]) -> Artifact:
        """Seal `staging` and move it into the store (atomic rename). Consumes staging."""
        hashed = hash_tree(staging)
        final = self.artifacts_dir / hashed[0]
        if self.fs.exists(final / MANIFEST):  # identical content already published: keep the first
            self.fs.rmtree(staging)
            return self.get(hashed[0])
        manifest = seal(staging, meta, self.fs, hashed)
        art_id = hashed[0]
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        if self.fs.exists(final):  # a leftover without manifest: not an artifact, replace it
            self.fs.rmtree(final)
        self.fs.rename(staging, final)
        return Artifact(art_id, final, manifest)

    # -- lookup ------------------------------------------------------------------------------------------------
    def get(self, art_id: str) -> Artifact:
        p = self.artifacts_dir / art_id
        try:
            manifest = read_manifest(p)
        except FileNotFoundError:
            raise UserError(f"{self.root}: no artifact {art_id!r} in this workspace's store") from None
        return Artifact(art_id, p, manifest)

    def get_or_corrupt(self, art_id: str) -> Artifact:
        """get(), but an unreadable manifest gives an Artifact of kind 'corrupt' with the problem in `problem`."""
        try:
            return self.get(art_id)
        except CorruptArtifact as e:
            return Artifact(art_id, self.artifacts_dir / art_id, {"kind": "corrupt", "problem": str(e), "files": []})

    def has(self, art_id: str) -> bool:
        return self.fs.exists(self.artifacts_dir / art_id / MANIFEST)

    def ids(self) -> list[str]:
        return [d for d in self.fs.listdir(self.artifacts_dir) if self.has(d)]

    def all(self) -> list[Artifact]:
        """Every artifact, oldest first; corrupt ones (unreadable manifest) are listed with kind 'corrupt'."""
        return sorted((self.get_or_corrupt(i) for i in self.ids()), key=lambda a: a.manifest.get("created", 0))

    def resolve_id(self, ref: str) -> str:
        """An artifact id from a full id, a unique id prefix (≥ 4 chars) or a tag."""
        if self.has(ref):
            return ref
        tag = self.tags_dir / ref
        if self.fs.exists(tag):
            return self.fs.read_text(tag).strip()
        if len(ref) >= 4:
            hits = [i for i in self.ids() if i.startswith(ref)]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                raise UserError(f"artifact prefix {ref!r} is ambiguous ({len(hits)} matches); give more characters")
        raise UserError(f"{self.root}: {ref!r} is no artifact id, id prefix or tag in this workspace")

    # -- the cache index ---------------------------------------------------------------------------------------
    def ref_path(self, fp: str) -> Path:
        return self.refs_dir / f"{fp}.json"

    def lookup(self, fp: str) -> dict[str, str] | None:
        """Outputs (name -> id) a fingerprint produced, if all of them are still in the store. A ref that cannot
        be read raises DamagedRef (the caller recomputes; publishing rewrites the ref)."""
        p = self.ref_path(fp)
        if not self.fs.exists(p):
            return None
        outputs = self._ref_outputs(p)
        return outputs if all(self.has(i) for i in outputs.values()) else None

    def _ref_outputs(self, p: Path) -> dict[str, str]:
        try:
            outputs = json.loads(self.fs.read_text(p))["outputs"]
            if isinstance(outputs, dict) and all(isinstance(v, str) for v in outputs.values()):
                return outputs
        except (OSError, ValueError, KeyError, TypeError):
            pass
        raise DamagedRef(f"{p}: unreadable cache ref; ignored, the stage is recomputed and the ref rewritten")

    def record(self, fp: str, outputs: dict[str, str], stage: str) -> None:
        self.fs.write_text_atomic(self.ref_path(fp), json.dumps({"outputs": outputs, "stage": stage}))

    def refs(self) -> dict[str, dict[str, str]]:
        """fingerprint -> outputs of every readable ref (a damaged one maps to {}: gc removes it)."""
        out = {}
        for f in self.fs.listdir(self.refs_dir):
            if f.endswith(".json"):
                try:
                    out[f[:-5]] = self._ref_outputs(self.refs_dir / f)
                except DamagedRef:
                    out[f[:-5]] = {}
        return out

    # -- tags --------------------------------------------------------------------------------------------------
    def tag(self, name: str, ref: str) -> str:
        if not name or "/" in name or name.startswith("."):
            raise UserError(f"tag name {name!r} is invalid; use letters, digits, '-', '_' or '.'")
        art_id = self.resolve_id(ref)
        self.fs.write_text_atomic(self.tags_dir / name, art_id + "\n")
        return art_id

    def tags(self) -> dict[str, str]:
        return {t: self.fs.read_text(self.tags_dir / t).strip() for t in self.fs.listdir(self.tags_dir)
                if not t.startswith(".")}

    # -- integrity ---------------------------------------------------------------------------------------------
    def verify(self, art_id: str, level: str = "full") -> list[str]:
        """Problems with an artifact at a check_files level; an unreadable manifest is one."""
        try:
            a = self.get(art_id)
        except CorruptArtifact as e:
            return [str(e)]
        return check_files(a.path, a.manifest, level=level, art_id=art_id)

    def quarantine(self, art_id: str, problems: list[str]) -> Path:
        """Move a corrupt artifact out of the store (one rename: readers see it or nothing), keeping it for a look
        in quarantine/<id>-<time>/ with the problems found; `gc` removes it. Returns where it went."""
        dest = self.quarantine_dir / f"{art_id}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)
        self.fs.rename(self.artifacts_dir / art_id, dest)
        (dest / "QUARANTINED.txt").write_text("\n".join(problems) + "\n")
        return dest

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
        """Remove artifacts outside keep's lineage closure, refs to them, and finished or orphaned work dirs."""
        keep = self.closure(keep | set(self.tags().values()))
        dead = [i for i in self.fs.listdir(self.artifacts_dir) if i not in keep]
        refs = self.refs()
        dead_refs = [fp for fp, outs in refs.items() if not outs or any(i not in keep for i in outs.values())]
        dead_work = [w for w in self.fs.listdir(self.work_root) if w not in busy_work
                     and (w in refs or w in dead_refs or not (self.work_root / w / "ckpt").exists())]
        quarantined = self.fs.listdir(self.quarantine_dir)
        if not dry_run:
            for fp in dead_refs:
                os.unlink(self.ref_path(fp))
            for i in dead:
                self.fs.rmtree(self.artifacts_dir / i)
            for w in dead_work:
                self.fs.rmtree(self.work_root / w)
            for q in quarantined:
                self.fs.rmtree(self.quarantine_dir / q)
        return {"artifacts": dead, "refs": dead_refs, "work": dead_work, "quarantine": quarantined}
