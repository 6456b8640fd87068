"""The local cache of remote artifacts: stages read files, so an artifact of a workspace in a bucket is fetched
into a local, content-addressed directory first (and a stage's own outputs are kept there when it publishes).

    $ALIGNPIPE_CACHE (default ~/.cache/alignpipe)/
        artifacts/<id>/        complete copies: the files and manifest.json
        artifacts/<id>.complete  written once the copy is complete and verified; its mtime is the LRU clock
        tmp/                   fills in progress (a fill is renamed into place only after it hashed to its id)
        locks/<id>             held shared by a stage reading the artifact; eviction skips held entries
        workspaces/<hash>/     each remote workspace's machine-local state (work dirs, stage logs, journal)

Every fill is re-hashed: the copy's content id must equal the artifact id, so a damaged transfer is never used.
The cache is bounded (`ALIGNPIPE_CACHE_SIZE`, default 20GB): after a fill, least recently used entries not in use
are removed until it fits. Identical content has one entry, whichever workspace it came from.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alignpipe.pipeline.errors import UserError

COMPLETE = ".complete"
DEFAULT_SIZE = "20GB"


def cache_root() -> Path:
    return Path(os.environ.get("ALIGNPIPE_CACHE") or Path.home() / ".cache" / "alignpipe")


def cache_limit() -> int:
    from alignpipe.pipeline.spec import parse_memory

    text = os.environ.get("ALIGNPIPE_CACHE_SIZE") or DEFAULT_SIZE
    try:
        limit = parse_memory(text)
    except ValueError as e:
        raise UserError(f"ALIGNPIPE_CACHE_SIZE: {e}") from None
    if not limit or limit <= 0:
        raise UserError(f"ALIGNPIPE_CACHE_SIZE={text!r}: must be more than 0 bytes, e.g. 50GB")
    return limit


def state_dir(url: str) -> Path:
    """This machine's state for the remote workspace `url`: work dirs, attempt files, stage logs, the journal."""
    return cache_root() / "workspaces" / hashlib.sha256(url.encode()).hexdigest()[:16]


def local_state(workspace: str | os.PathLike) -> Path:
    """Where this machine keeps a workspace's local part: the directory itself, or its state dir for a bucket."""
    text = str(workspace)
    if "://" in text and not text.startswith("file://"):
        return state_dir(text.rstrip("/"))
    return Path(text.removeprefix("file://"))


class ArtifactCache:
    def __init__(self, root: Path | None = None, limit: int | None = None):
        self.root = root or cache_root()
        self.limit = limit if limit is not None else cache_limit()
        self.dir = self.root / "artifacts"

    def path(self, art_id: str) -> Path:
        return self.dir / art_id

    def marker(self, art_id: str) -> Path:
        return self.dir / f"{art_id}{COMPLETE}"

    def has(self, art_id: str) -> bool:
        return self.marker(art_id).exists() and self.path(art_id).is_dir()

    def fetch(self, store: Any, art_id: str) -> Path:
        """The local copy of artifact `art_id` of `store` (a remote Store), downloaded and re-hashed if needed."""
        if self.has(art_id):
            self._touch(art_id)
            return self.path(art_id)
        from alignpipe.pipeline.store import MANIFEST, hash_tree

        manifest = store.get(art_id).manifest
        tmp = self._tmp(art_id)
        files = [e["path"] for e in manifest["files"]]
        store.fs.get_files([(f"artifacts/{art_id}/{rel}", tmp / rel) for rel in files])
        got, _ = hash_tree(tmp) if files else ("", [])
        if files and got != art_id:
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(f"{store.fs.url(f'artifacts/{art_id}')}: the downloaded files hash to {got[:12]}, not "
                            f"to the artifact id; the remote copy is damaged: run `alignpipe verify {art_id[:12]}`")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        return self._install(art_id, tmp)

    def add(self, art_id: str, directory: Path) -> Path:
        """Keep `directory` (a sealed artifact with its manifest, e.g. what this machine just published) as the
        cached copy; it is moved, not copied."""
        if self.has(art_id):
            shutil.rmtree(directory, ignore_errors=True)
            return self.path(art_id)
        tmp = self._tmp(art_id)
        tmp.rmdir()
        try:
            os.rename(directory, tmp)
        except OSError:  # another file system than the cache's
            shutil.copytree(directory, tmp)
            shutil.rmtree(directory, ignore_errors=True)
        return self._install(art_id, tmp)

    def _tmp(self, art_id: str) -> Path:
        tmp = self.root / "tmp" / f"{art_id}-{os.getpid()}-{time.monotonic_ns()}"
        tmp.mkdir(parents=True)
        return tmp

    def _install(self, art_id: str, tmp: Path) -> Path:
        dest = self.path(art_id)
        dest.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                os.rename(tmp, dest)
                break
            except OSError:  # another process installed it first (dest exists): use theirs, unless it is gone
                if self.has(art_id):
                    shutil.rmtree(tmp, ignore_errors=True)
                    break
                shutil.rmtree(dest, ignore_errors=True)  # an eviction half done: finish it, then install ours
        self.marker(art_id).write_text("")
        self._touch(art_id)
        self.evict(keep={art_id})  # not the copy just asked for
        return dest

    def _touch(self, art_id: str) -> None:
        try:
            os.utime(self.marker(art_id))  # the LRU clock: last use
        except OSError:
            pass

    @contextmanager
    def using(self, art_ids: list[str]) -> Iterator[None]:
        """Hold shared locks on `art_ids` (a stage reading them): eviction leaves them alone meanwhile."""
        fds = []
        try:
            for art_id in art_ids:
                fds.append(self._lock(art_id, fcntl.LOCK_SH))
            yield
        finally:
            for fd in fds:
                os.close(fd)

    def _lock(self, art_id: str, how: int) -> int:
        lock = self.root / "locks" / art_id
        lock.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, how)
        return fd

    def entries(self) -> list[tuple[float, int, str]]:
        """(last use, size in bytes, id) of every complete entry."""
        out = []
        for marker in self.dir.glob(f"*{COMPLETE}") if self.dir.is_dir() else []:
            art_id = marker.name[: -len(COMPLETE)]
            size = sum(f.stat().st_size for f in self.path(art_id).rglob("*") if f.is_file())
            out.append((marker.stat().st_mtime, size, art_id))
        return out

    def evict(self, keep: set[str] = frozenset()) -> list[str]:
        """Remove least recently used entries not in use until the cache fits its limit; returns their ids."""
        entries = sorted(self.entries())
        total = sum(size for _, size, _ in entries)
        removed = []
        for _, size, art_id in entries:
            if total <= self.limit:
                break
            if art_id in keep:
                continue
            try:
                fd = self._lock(art_id, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a stage is reading it
            try:
                self.marker(art_id).unlink(missing_ok=True)  # first: a half-removed copy is never complete
                shutil.rmtree(self.path(art_id), ignore_errors=True)
            finally:
                os.close(fd)
            total -= size
            removed.append(art_id)
        return removed
