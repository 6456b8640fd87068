"""The store's file interface: a few operations on paths relative to a workspace root, with two twins.

- `LocalFS`: a directory. Atomic replace is write-to-temp + fsync + rename; exclusive create is O_EXCL.
- `ObjectFS`: any fsspec URI — `gs://` (gcsfs), `memory://` (tests), others fsspec serves. An object PUT replaces
  atomically; exclusive create is a conditional PUT, so two machines creating the same manifest end with one.
  There is no rename: the store publishes by uploading files first and the manifest last (see store.py).
- `s3.S3FS`: `s3://bucket/prefix` (and S3-compatible endpoints through the standard `AWS_ENDPOINT_URL` and
  profile settings), the same semantics on botocore and s3transfer directly (why: see s3.py).

Paths are POSIX strings relative to the root ("artifacts/<id>/manifest.json"). Credentials come from the
backends' standard provider chains only; nothing here reads, stores or prints a secret.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignpipe.pipeline.errors import UserError

if TYPE_CHECKING:
    from alignpipe.pipeline.s3 import S3FS

TRANSFER_THREADS = 8
TRANSFER_ATTEMPTS = 4  # a transient network error is retried with exponential backoff (0.5, 1, 2 s)
CLIENT_ENV = ("AWS_", "GOOGLE_", "GCS", "FSSPEC_")  # environment that configures a backend's client
clients: dict[tuple[Any, ...], Any] = {}  # one backend client per (scheme, its environment, process)


def client_key(scheme: str) -> tuple[Any, ...]:
    """A backend client is reused while this stays the same: a new one costs a session and a credential lookup
    (~0.1-0.2 s for S3), but a changed endpoint or key in the environment must get a new client."""
    return scheme, os.getpid(), tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(CLIENT_ENV)))


@dataclass(frozen=True)
class Entry:
    size: int
    modified: float  # seconds since the epoch


def fsync_dir(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalFS:
    """A workspace in a local directory."""

    is_local = True

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def url(self, rel: str = "") -> str:
        return str(self.root / rel) if rel else str(self.root)

    def local_path(self, rel: str) -> Path:
        return self.root / rel

    def exists(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def read_bytes(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Replace atomically and durably: a reader sees the old bytes or the new, never a mix."""
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
        fsync_dir(p.parent)

    def create(self, rel: str, data: bytes) -> bool:
        """Write `rel` only if it does not exist yet; False if it did (its bytes are left alone)."""
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        try:
            os.link(tmp, p)  # atomic and exclusive: fails if p exists
            fsync_dir(p.parent)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def listdir(self, rel: str) -> list[str]:
        p = self.root / rel
        return sorted(os.listdir(p)) if p.is_dir() else []

    def find(self, rel: str) -> dict[str, Entry]:
        """Every file under `rel`, by path relative to `rel`."""
        base = self.root / rel
        out = {}
        for dirpath, _, files in os.walk(base):
            for f in files:
                st = os.stat(os.path.join(dirpath, f))
                out[os.path.relpath(os.path.join(dirpath, f), base).replace(os.sep, "/")] = Entry(st.st_size,
                                                                                                 st.st_mtime)
        return out

    def remove(self, rel: str) -> None:
        (self.root / rel).unlink(missing_ok=True)

    def move(self, src: str, dst: str) -> None:
        (self.root / dst).parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.root / src, self.root / dst)

    def rmtree(self, rel: str) -> None:
        shutil.rmtree(self.root / rel, ignore_errors=True)


class ObjectFS:
    """A workspace under an fsspec URI (an object store: no rename, atomic PUT, conditional create)."""

    is_local = False

    def __init__(self, url: str):
        import fsspec

        self._url = url.rstrip("/")
        scheme = self._url.split("://", 1)[0]
        key = client_key(scheme)
        try:
            if key in clients:
                self.fs = clients[key]
                self.base = self.fs._strip_protocol(self._url)
            else:  # no listings cache: other processes and machines write the same workspace. fsspec's own
                # instance cache is keyed by arguments only: a changed endpoint or key in the environment would
                # get the old client, hence ours
                self.fs, self.base = fsspec.core.url_to_fs(self._url, use_listings_cache=False,
                                                           skip_instance_cache=True)
                clients[key] = self.fs
        except ImportError as e:
            extra = {"gs": "gcsfs (pip install 'alignpipe[gcs]')"}.get(scheme, str(e))
            raise UserError(f"workspace {url!r}: {scheme}:// needs {extra}") from None
        self.base = self.base.rstrip("/")

    def url(self, rel: str = "") -> str:
        return f"{self._url}/{rel}" if rel else self._url

    def check_root(self) -> None:
        """The bucket (or container) exists and can be listed: one-line errors otherwise. A missing prefix under it
        is fine (the workspace is new)."""
        bucket = self.base.split("/", 1)[0]
        if not retrying(lambda: self.fs.exists(bucket), f"reach {self._url}"):
            raise UserError(f"workspace {self._url}: the bucket {bucket!r} does not exist; create it or fix the URI")
        self.listdir("")

    def _p(self, rel: str) -> str:
        return f"{self.base}/{rel}" if rel else self.base

    def exists(self, rel: str) -> bool:
        return retrying(lambda: self.fs.exists(self._p(rel)), f"check {self.url(rel)}")

    def read_bytes(self, rel: str) -> bytes:
        return retrying(lambda: self.fs.cat_file(self._p(rel)), f"read {self.url(rel)}")

    def write_bytes(self, rel: str, data: bytes) -> None:
        retrying(lambda: self.fs.pipe_file(self._p(rel), data), f"write {self.url(rel)}")

    def create(self, rel: str, data: bytes) -> bool:
        def put() -> bool:
            try:
                self.fs.pipe_file(self._p(rel), data, mode="create")
                return True
            except FileExistsError:
                return False

        return retrying(put, f"create {self.url(rel)}")

    def listdir(self, rel: str) -> list[str]:
        def ls() -> list[str]:
            try:
                entries = self.fs.ls(self._p(rel), detail=False, refresh=True)
            except FileNotFoundError:
                return []
            return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries} - {""})

        return retrying(ls, f"list {self.url(rel)}")

    def find(self, rel: str) -> dict[str, Entry]:
        def walk() -> dict[str, Entry]:
            prefix = self._p(rel).rstrip("/") + "/"
            try:
                found = self.fs.find(prefix, detail=True, withdirs=False)
            except FileNotFoundError:
                return {}
            return {p[len(prefix):]: Entry(int(info.get("size") or 0), _modified(info))
                    for p, info in found.items() if p.startswith(prefix)}

        return retrying(walk, f"list {self.url(rel)}")

    def remove(self, rel: str) -> None:
        def rm() -> None:
            try:
                self.fs.rm_file(self._p(rel))
            except FileNotFoundError:
                pass

        retrying(rm, f"remove {self.url(rel)}")

    def move(self, src: str, dst: str) -> None:
        """One object to another key (copy, then delete: object stores have no rename)."""
        retrying(lambda: self.fs.copy(self._p(src), self._p(dst)), f"copy {self.url(src)}")
        self.remove(src)

    def rmtree(self, rel: str) -> None:
        files = list(self.find(rel))
        if files:
            retrying(lambda: self.fs.rm([f"{self._p(rel)}/{f}" for f in files]), f"remove {self.url(rel)}")

    # -- conditional replace (leases) --------------------------------------------------------------------------
    # fsspec has no conditional PUT on an ETag: these compare and write without an atomicity guarantee (memory://
    # within one process, for tests). S3 does them atomically (s3.S3FS).
    def read_with_etag(self, rel: str) -> tuple[bytes, str]:
        data = self.read_bytes(rel)
        return data, _digest(data)

    def etag(self, rel: str) -> str | None:
        try:
            return self.read_with_etag(rel)[1]
        except FileNotFoundError:
            return None

    def replace_if(self, rel: str, data: bytes, etag: str | None) -> bool:
        """Replace `rel` only if it is still the version `etag` names; False if it changed (or vanished)."""
        if etag is None:
            return self.create(rel, data)
        try:
            current = self.read_bytes(rel)
        except FileNotFoundError:
            return False
        if _digest(current) != etag:
            return False
        self.write_bytes(rel, data)
        return True

    # -- transfers -------------------------------------------------------------------------------------------
    def put_files(self, pairs: Iterable[tuple[Path, str]], progress: Callable[[int], None] | None = None) -> None:
        """Upload (local file, relative path) pairs in parallel; each retried on transient errors."""
        parallel(pairs, lambda lp, rel: self.fs.put_file(str(lp), self._p(rel)), "upload", progress)

    def get_files(self, pairs: Iterable[tuple[str, Path]], progress: Callable[[int], None] | None = None) -> None:
        """Download (relative path, local file) pairs in parallel."""
        def get(rel: str, lp: Path) -> None:
            lp.parent.mkdir(parents=True, exist_ok=True)
            self.fs.get_file(self._p(rel), str(lp))

        parallel(pairs, get, "download", progress)


def parallel(pairs: Iterable[tuple[Any, Any]], one: Callable[[Any, Any], None], what: str,
             progress: Callable[[int], None] | None) -> None:
    """one(a, b) for every pair on TRANSFER_THREADS threads, each retried on transient errors."""
    def task(pair: tuple[Any, Any]) -> None:
        retrying(lambda: one(*pair), f"{what} {pair}")
        if progress is not None:
            progress(1)

    with ThreadPoolExecutor(TRANSFER_THREADS) as pool:
        for _ in pool.map(task, list(pairs)):
            pass


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _modified(info: dict[str, Any]) -> float:
    m = info.get("LastModified") or info.get("mtime") or info.get("created") or 0
    return m.timestamp() if hasattr(m, "timestamp") else float(m)


def retrying(fn: Callable[[], Any], what: str) -> Any:
    """fn(), retried on transient errors (connection trouble, throttling, 5xx) with exponential backoff. Errors the
    user must fix (no such bucket, access denied, no endpoint) become one-line UserErrors naming the URI."""
    for attempt in range(TRANSFER_ATTEMPTS):
        try:
            return fn()
        except (FileNotFoundError, FileExistsError, IsADirectoryError):
            raise
        except Exception as e:  # backends raise their own types: classify by what they say
            kind = classify(e)
            if kind != "transient" or attempt == TRANSFER_ATTEMPTS - 1:
                raise UserError(f"cannot {what}: {kind} ({describe(e)})") from None
            time.sleep(0.5 * 2**attempt)
    raise AssertionError("unreachable")


def classify(e: BaseException) -> str:
    text = f"{type(e).__name__} {e}".lower()
    if isinstance(e, PermissionError):
        return "access denied; check the credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, ...) and the bucket's policy"
    if any(k in text for k in ("nosuchbucket", "bucket does not exist", "specified bucket")):
        return "the bucket does not exist; create it or fix the URI"
    if any(k in text for k in ("accessdenied", "access denied", "forbidden", "invalidaccesskeyid", "signature",
                               "403", "credentials", "unable to locate")):
        return "access denied; check the credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, ...) and the bucket's policy"
    if any(k in text for k in ("slowdown", "throttl", "timeout", "timed out", "connection reset", "500", "502",
                               "503", "504", "temporarily", "conditionalrequestconflict")):
        return "transient"
    if any(k in text for k in ("could not connect", "connection refused", "name or service", "endpoint",
                               "nodename", "connecterror", "connection error")):
        return "the endpoint is unreachable; check AWS_ENDPOINT_URL / the network"
    return "the storage backend refused it"


def describe(e: BaseException) -> str:
    """The first line of an error, with anything that looks like a credential cut out."""
    import re

    line = (str(e).splitlines() or [type(e).__name__])[0][:300]
    return re.sub(r"(?i)(secret|token|signature|credential|key)[^\s,;]*\s*[=:]\s*\S+", r"\1=<hidden>", line)


def open_fs(workspace: str | os.PathLike) -> LocalFS | ObjectFS | S3FS:
    text = str(workspace)
    if text.startswith("s3://"):
        from alignpipe.pipeline.s3 import S3FS

        return S3FS(text)
    if "://" in text and not text.startswith("file://"):
        return ObjectFS(text)
    return LocalFS(text[len("file://"):] if text.startswith("file://") else text)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace a local file atomically and durably."""
    LocalFS(path.parent).write_bytes(path.name, data)
