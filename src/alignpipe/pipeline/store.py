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
    listing = "\n".join(f"{e['path']}\t{e['sha256']}" for e in entries)
    return hashlib.sha256(listing.encode()).hexdigest(), entries


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


def check_files(path: Path, manifest: dict[str, Any], full: bool) -> list[str]:
    """Problems with an artifact directory against its manifest: missing, resized, re-hashed, extra files."""
    problems = []
    listed = {e["path"] for e in manifest.get("files", [])}
    for e in manifest.get("files", []):
        f = path / e["path"]
        if not f.is_file():
            problems.append(f"{e['path']}: missing")
        elif f.stat().st_size != e["size"]:
            problems.append(f"{e['path']}: size {f.stat().st_size} != {e['size']} recorded")
        elif full and sha256_file(f) != e["sha256"]:
            problems.append(f"{e['path']}: content changed (sha256 mismatch)")
    for rel in list_files(path) if full else []:
        if rel not in listed:
            problems.append(f"{rel}: not in the manifest")
    return problems


def seal(staging: Path, meta: dict[str, Any], fs: LocalFS | None = None,
         hashed: tuple[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Hash a finished output directory (unless `hashed` is its hash_tree already) and write its manifest, last:
    the payload is fsynced first, so once the manifest exists (even after a power loss) the files it lists are
    on disk. Returns the manifest."""
    art_id, files = hashed or hash_tree(staging)
    manifest = {"id": art_id, **meta, "files": files, "created": time.time(), "schema_version": SCHEMA_VERSION}
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
            manifest = json.loads(self.fs.read_text(p / MANIFEST))
        except FileNotFoundError:
            raise UserError(f"{self.root}: no artifact {art_id!r} in this workspace's store") from None
        return Artifact(art_id, p, manifest)

    def has(self, art_id: str) -> bool:
        return self.fs.exists(self.artifacts_dir / art_id / MANIFEST)

    def ids(self) -> list[str]:
        return [d for d in self.fs.listdir(self.artifacts_dir) if self.has(d)]

    def all(self) -> list[Artifact]:
        return sorted((self.get(i) for i in self.ids()), key=lambda a: a.manifest.get("created", 0))

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
        """Outputs (name -> id) a fingerprint produced, if all of them are still in the store."""
        p = self.ref_path(fp)
        if not self.fs.exists(p):
            return None
        outputs = json.loads(self.fs.read_text(p))["outputs"]
        return outputs if all(self.has(i) for i in outputs.values()) else None

    def record(self, fp: str, outputs: dict[str, str], stage: str) -> None:
        self.fs.write_text_atomic(self.ref_path(fp), json.dumps({"outputs": outputs, "stage": stage}))

    def refs(self) -> dict[str, dict[str, str]]:
        out = {}
        for f in self.fs.listdir(self.refs_dir):
            if f.endswith(".json"):
                out[f[:-5]] = json.loads(self.fs.read_text(self.refs_dir / f))["outputs"]
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
    def verify(self, art_id: str, full: bool = True) -> list[str]:
        a = self.get(art_id)
        return check_files(a.path, a.manifest, full=full)

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
            todo.extend(v["id"] for v in self.get(i).manifest.get("inputs", {}).values() if not v.get("external"))
        return keep

    # -- garbage collection ------------------------------------------------------------------------------------
    def gc(self, keep: set[str], dry_run: bool, busy_work: set[str]) -> dict[str, list[str]]:
        """Remove artifacts outside keep's lineage closure, refs to them, and finished or orphaned work dirs."""
        keep = self.closure(keep | set(self.tags().values()))
        dead = [i for i in self.fs.listdir(self.artifacts_dir) if i not in keep]
        refs = self.refs()
        dead_refs = [fp for fp, outs in refs.items() if any(i not in keep for i in outs.values())]
        dead_work = [w for w in self.fs.listdir(self.work_root) if w not in busy_work
                     and (w in refs or w in dead_refs or not (self.work_root / w / "ckpt").exists())]
        if not dry_run:
            for fp in dead_refs:
                os.unlink(self.ref_path(fp))
            for i in dead:
                self.fs.rmtree(self.artifacts_dir / i)
            for w in dead_work:
                self.fs.rmtree(self.work_root / w)
        return {"artifacts": dead, "refs": dead_refs, "work": dead_work}
