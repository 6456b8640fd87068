"""The store's file interface on S3 and S3-compatible servers, on AWS's own clients: botocore for requests and
s3transfer (what `aws s3 cp` uses) for uploads.

Other fsspec URIs (gs://, memory://) go through `fs.ObjectFS`; s3:// comes here because every command that
touches a bucket pays its client's start-up, and a publish its upload, measured on the local S3 server
(benchmarks/storage.py, 2026-12-05): importing s3fs and aiobotocore costs ~0.3 s a process against botocore's
~0.13 s (a no-op rerun's whole budget is ~0.6 s), and s3fs uploads a multi-part file's parts from one event-loop
thread (0.46 s for 50 MB) where s3transfer's threads take 0.34-0.40 s.

The semantics are ObjectFS's: an object PUT replaces atomically, `create` is a conditional PUT (`If-None-Match:
*`), `replace_if` a PUT conditional on the ETag (`If-Match`); there is no rename. Credentials, region, profile and
endpoint come from botocore's standard chain (AWS_PROFILE, AWS_ACCESS_KEY_ID, AWS_ENDPOINT_URL, ~/.aws/...).
Requests are retried by `fs.retrying` (transient errors, exponential backoff), not inside botocore, so a mistake
(no bucket, denied, no endpoint) is reported at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.fs import (
    TRANSFER_THREADS,
    Entry,
    client_key,
    clients,
    parallel,
    retrying,
)

PART = 8 * 2**20  # multi-part above this size, in parts of this size (10 at once): `aws s3 cp`'s defaults
READ_CHUNK = 2**16  # larger reads are mmap-backed allocations: 1 MB chunks fetched 50 MB in 0.17 s, these 0.08 s
NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
CHANGED = {"PreconditionFailed", "412", *NOT_FOUND}  # a conditional PUT lost: the object changed or vanished


def _code(e: BaseException) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


def _client() -> tuple[Any, Any]:
    """(botocore S3 client, s3transfer manager), one per process and AWS_* environment (a new client costs
    ~0.1 s: the service model is loaded)."""
    key = client_key("s3")
    if key not in clients:
        try:
            import botocore.config
            import botocore.session
            from s3transfer.manager import TransferConfig, TransferManager
        except ImportError:
            raise UserError("s3:// workspaces need botocore and s3transfer (pip install 'alignpipe[s3]')") from None
        config = botocore.config.Config(max_pool_connections=2 * TRANSFER_THREADS, connect_timeout=10,
                                        read_timeout=60, retries={"total_max_attempts": 1})
        client = botocore.session.Session().create_client("s3", config=config)
        clients[key] = (client, TransferManager(client, TransferConfig(multipart_threshold=PART,
                                                                       multipart_chunksize=PART)))
    return clients[key]


class S3FS:
    """A workspace under s3://bucket/prefix."""

    is_local = False

    def __init__(self, url: str):
        self._url = url.rstrip("/")
        self.bucket, _, prefix = self._url[len("s3://"):].partition("/")
        self.base = prefix.strip("/")
        if not self.bucket:
            raise UserError(f"workspace {url!r}: no bucket in the URI; write s3://BUCKET/PREFIX")
        self.client, self.transfer = _client()

    def url(self, rel: str = "") -> str:
        return f"{self._url}/{rel}" if rel else self._url

    def _key(self, rel: str) -> str:
        return "/".join(p for p in (self.base, rel.strip("/")) if p)

    def _prefix(self, rel: str) -> str:
        key = self._key(rel)
        return f"{key}/" if key else ""

    def check_root(self) -> None:
        """The bucket exists and can be listed: one-line errors otherwise. A missing prefix is fine (a new
        workspace). HEAD of the bucket is where a missing bucket, denied access and no endpoint differ."""
        def head() -> None:
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except Exception as e:
                if _code(e) in NOT_FOUND | {"NoSuchBucket"}:
                    raise UserError(f"workspace {self._url}: the bucket {self.bucket!r} does not exist; create it or "
                                    "fix the URI") from None
                raise

        retrying(head, f"reach {self._url}")
        self.listdir("")

    def _head(self, rel: str) -> dict[str, Any] | None:
        """The object's HEAD response, or None if there is no such object (not retried: callers are)."""
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(rel))
        except Exception as e:
            if _code(e) in NOT_FOUND:
                return None
            raise

    def _get(self, rel: str) -> dict[str, Any]:
        """The object's GET response (the body still to read); FileNotFoundError if there is none."""
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(rel))
        except Exception as e:
            if _code(e) in NOT_FOUND:
                raise FileNotFoundError(self.url(rel)) from None
            raise

    def exists(self, rel: str) -> bool:
        """Whether the object `rel` exists (an object, not a prefix: the store asks only about files)."""
        return retrying(lambda: self._head(rel) is not None, f"check {self.url(rel)}")

    def etag(self, rel: str) -> str | None:
        head = retrying(lambda: self._head(rel), f"check {self.url(rel)}")
        return None if head is None else head["ETag"]

    def read_bytes(self, rel: str) -> bytes:
        return self.read_with_etag(rel)[0]

    def read_with_etag(self, rel: str) -> tuple[bytes, str]:
        def get() -> tuple[bytes, str]:
            resp = self._get(rel)
            return resp["Body"].read(), resp["ETag"]

        return retrying(get, f"read {self.url(rel)}")

    def write_bytes(self, rel: str, data: bytes) -> None:
        retrying(lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(rel), Body=data),
                 f"write {self.url(rel)}")

    def create(self, rel: str, data: bytes) -> bool:
        """Write `rel` only if it does not exist yet (If-None-Match: *); False if it did."""
        return self._put_if(rel, data, {"IfNoneMatch": "*"}, "create")

    def replace_if(self, rel: str, data: bytes, etag: str | None) -> bool:
        """Replace `rel` only if it is still the version `etag` names (If-Match); False if it changed or vanished.
        etag None: create it only if it does not exist."""
        if etag is None:
            return self.create(rel, data)
        return self._put_if(rel, data, {"IfMatch": etag}, "replace")

    def _put_if(self, rel: str, data: bytes, condition: dict[str, str], what: str) -> bool:
        """A conditional PUT: False if the condition failed. A concurrent conditional write in flight
        (ConditionalRequestConflict) is transient: `retrying` asks again."""
        def put() -> bool:
            try:
                self.client.put_object(Bucket=self.bucket, Key=self._key(rel), Body=data, **condition)
                return True
            except Exception as e:
                if _code(e) in CHANGED:
                    return False
                raise

        return retrying(put, f"{what} {self.url(rel)}")

    def _list(self, prefix: str, delimiter: bool) -> Iterable[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        kwargs = {"Bucket": self.bucket, "Prefix": prefix, **({"Delimiter": "/"} if delimiter else {})}
        yield from paginator.paginate(**kwargs)

    def listdir(self, rel: str) -> list[str]:
        def ls() -> list[str]:
            prefix = self._prefix(rel)
            names = set()
            for page in self._list(prefix, delimiter=True):
                names.update(p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", []))
                names.update(o["Key"][len(prefix):] for o in page.get("Contents", []))
            return sorted(names - {""})

        return retrying(ls, f"list {self.url(rel)}")

    def find(self, rel: str) -> dict[str, Entry]:
        """Every object under `rel`, by key relative to `rel`."""
        def walk() -> dict[str, Entry]:
            prefix = self._prefix(rel)
            return {o["Key"][len(prefix):]: Entry(int(o["Size"]), o["LastModified"].timestamp())
                    for page in self._list(prefix, delimiter=False) for o in page.get("Contents", [])
                    if not o["Key"].endswith("/")}

        return retrying(walk, f"list {self.url(rel)}")

    def remove(self, rel: str) -> None:
        retrying(lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(rel)),
                 f"remove {self.url(rel)}")

    def move(self, src: str, dst: str) -> None:
        """One object to another key (a server-side copy, multi-part when large, then a delete)."""
        source = {"Bucket": self.bucket, "Key": self._key(src)}
        retrying(lambda: self.transfer.copy(source, self.bucket, self._key(dst)).result(), f"copy {self.url(src)}")
        self.remove(src)

    def rmtree(self, rel: str) -> None:
        keys = [self._key(f"{rel}/{k}") for k in self.find(rel)]
        for i in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            batch = {"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True}
            retrying(lambda b=batch: self._delete(b), f"remove {self.url(rel)}")

    def _delete(self, batch: dict[str, Any]) -> None:
        errors = self.client.delete_objects(Bucket=self.bucket, Delete=batch).get("Errors", [])
        if errors:
            raise OSError(f"{errors[0].get('Code')} {errors[0].get('Message')}")

    # -- transfers -------------------------------------------------------------------------------------------
    def put_files(self, pairs: Iterable[tuple[Path, str]], progress: Callable[[int], None] | None = None) -> None:
        """Upload (local file, relative path) pairs in parallel; multi-part above 8 MB; each file retried on
        transient errors."""
        def put(lp: Path, rel: str) -> None:
            self.transfer.upload(str(lp), self.bucket, self._key(rel)).result()

        parallel(pairs, put, "upload", progress)

    def get_files(self, pairs: Iterable[tuple[str, Path]], progress: Callable[[int], None] | None = None) -> None:
        """Download (relative path, local file) pairs in parallel, each as one streamed GET (on the local server
        2.2x faster than s3transfer's ranged GETs; the caller re-hashes what arrives)."""
        def get(rel: str, lp: Path) -> None:
            lp.parent.mkdir(parents=True, exist_ok=True)
            body = self._get(rel)["Body"]
            with open(lp, "wb") as f:
                for chunk in body.iter_chunks(READ_CHUNK):
                    f.write(chunk)

        parallel(pairs, get, "download", progress)
