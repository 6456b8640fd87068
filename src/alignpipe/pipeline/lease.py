"""The workspace lock across machines: a lease object in the bucket, with an expiry, renewed by a heartbeat.

A local workspace keeps its flock (journal.WorkspaceLock: the OS frees it when the holder dies). A workspace in a
bucket has no flock, so its holder writes a lease object instead:

    locks/exclusive.json        a run or gc (one at a time)
    locks/shared/<token>.json   platform tasks (`stage exec`; several side by side, never beside an exclusive one)

each holding who holds it (run pid, host) and until when. It is taken by a conditional create (If-None-Match),
renewed every TTL/3 by a heartbeat thread, and deleted on release. A holder that died stops renewing: once its
lease expires, the next run takes it over with a conditional replace (If-Match on the lease it read, so two
takers cannot both win) and says whose lease expired. An exclusive taker that finds live shared leases (and a
shared one that finds a live exclusive lease) gives way: both sides write first and check second, so one of two
racing sides always backs off.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from typing import Any

from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.fs import ObjectFS

EXCLUSIVE = "locks/exclusive.json"
SHARED = "locks/shared"


def lease_ttl() -> float:
    return float(os.environ.get("ALIGNPIPE_LEASE_TTL", "60"))


def holder_text(run_id: str | None = None) -> str:
    """Who holds a workspace, as other runs' refusals name it."""
    where = f"pid {os.getpid()} on {socket.gethostname()}"
    return f"run {run_id} ({where})" if run_id else f"run {where}"


class ObjectLease:
    """The lease of a workspace in a bucket; the same acquire/release as WorkspaceLock."""

    def __init__(self, fs: ObjectFS, ttl: float | None = None):
        self.fs = fs
        self.ttl = ttl if ttl is not None else lease_ttl()
        self.token = uuid.uuid4().hex
        self.key: str | None = None
        self.etag: str | None = None
        self.notes: list[str] = []  # what acquiring found (an expired holder taken over), for the run's output
        self._stop = threading.Event()
        self._wake = threading.Event()  # a beat now (the holder's name changed), not at the next period
        self._beat: threading.Thread | None = None
        self.holder = holder_text()

    def name_run(self, run_id: str) -> None:
        """Say which run holds the lease (written by the next heartbeat: the run id comes after the lease)."""
        self.holder = holder_text(run_id)
        self._wake.set()

    def _body(self) -> bytes:
        return json.dumps({"holder": self.holder, "token": self.token, "expires": time.time() + self.ttl}).encode()

    def acquire(self, wait: bool = False, poll: float = 1.0, shared: bool = False) -> ObjectLease:
        while True:
            blocker = self._try_shared() if shared else self._try_exclusive()
            if blocker is None:
                break
            if not wait:
                raise UserError(f"{self.fs.url()}: workspace is in use by {blocker['holder']} (lease renewed until "
                                f"{time.strftime('%H:%M:%S', time.localtime(blocker['expires']))}); wait for it to "
                                "finish, pass --wait to queue behind it, or use another --workspace")
            time.sleep(poll)
        self._beat = threading.Thread(target=self._heartbeat, name="alignpipe-lease", daemon=True)
        self._beat.start()
        return self

    def _try_exclusive(self) -> dict[str, Any] | None:
        """None once this process holds the exclusive lease, else the holder in the way."""
        if not self.fs.create(EXCLUSIVE, self._body()):
            current, etag = self._read(EXCLUSIVE)
            if current is not None and current["expires"] > time.time():
                return current
            # expired: its holder died (or lost its connection for a whole TTL); take over, atomically
            if not self.fs.replace_if(EXCLUSIVE, self._body(), etag):
                return self._read(EXCLUSIVE)[0] or {"holder": "another run", "expires": time.time()}
            if current is not None:
                self.notes.append(f"the workspace lease of {current['holder']} expired at "
                                  f"{time.strftime('%H:%M:%S', time.localtime(current['expires']))} (that run "
                                  "died or lost its connection); taken over")
        self.key = EXCLUSIVE
        self.etag = None  # read by the first heartbeat (off the run's critical path)
        live = self._live_shared()
        if live:  # platform tasks hold the workspace: give way
            self._delete_own()
            return live[0]
        return None

    def _try_shared(self) -> dict[str, Any] | None:
        self.key = f"{SHARED}/{self.token}.json"
        self.fs.write_bytes(self.key, self._body())
        current, _ = self._read(EXCLUSIVE)
        if current is not None and current["expires"] > time.time():
            self._delete_own()
            return current
        return None

    def _live_shared(self) -> list[dict[str, Any]]:
        out = []
        for name in self.fs.listdir(SHARED):
            lease, _ = self._read(f"{SHARED}/{name}")
            if lease is not None and lease["expires"] > time.time():
                out.append(lease)
        return out

    def _read(self, key: str) -> tuple[dict[str, Any] | None, str | None]:
        try:
            data, etag = self.fs.read_with_etag(key)
            lease = json.loads(data)
            float(lease["expires"])
            return lease, etag
        except FileNotFoundError:
            return None, None
        except (ValueError, KeyError, TypeError):  # a garbled lease protects nothing: treat it as expired
            return {"holder": "an unreadable lease", "expires": 0.0}, self.fs.etag(key)

    def _heartbeat(self) -> None:
        while True:
            self._wake.wait(self.ttl / 3)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if self.key == EXCLUSIVE:
                    if self.etag is None:
                        self.etag = self.fs.etag(EXCLUSIVE)
                    if not self.fs.replace_if(EXCLUSIVE, self._body(), self.etag):
                        print(f"warning: {self.fs.url(EXCLUSIVE)}: the workspace lease was taken over by another "
                              "run while this one could not renew it", flush=True)
                        return
                    self.etag = self.fs.etag(EXCLUSIVE)
                elif self.key:
                    self.fs.write_bytes(self.key, self._body())
            except UserError:
                continue  # a passing network problem: try again at the next beat (the TTL covers 3 misses)

    def _delete_own(self) -> None:
        if self.key == EXCLUSIVE:
            current, _ = self._read(EXCLUSIVE)
            if current is None or current.get("token") != self.token:
                self.key = None
                return  # not ours any more: leave it
        if self.key:
            self.fs.remove(self.key)
        self.key = None

    def release(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        self._delete_own()

    def __enter__(self) -> ObjectLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def workspace_lock(store: Any) -> Any:
    """The lock of `store`'s workspace: a flock for a local directory, a lease object for a bucket."""
    if store.remote:
        return ObjectLease(store.fs)
    from alignpipe.pipeline.journal import WorkspaceLock

    return WorkspaceLock(store.root)
