"""Workspaces in a bucket (issue 13): transfer speed against the reference client, and the cost of a no-op rerun.

- **Publish / fetch of a 50 MB model artifact** to an S3-compatible server on localhost (moto's server mode):
  `Store.publish` (hash, upload every file in parallel, conditional manifest create) and a fetch into an empty
  cache (`Store.local_dir`: parallel download, then a full re-hash against the artifact id), against boto3's
  `s3transfer` (`upload_file` / `download_file` per file, its default multi-part chunking and concurrency: what
  `aws s3 cp` does), moving the same files, interleaved. Throughput in MB/s; > 1 means alignpipe is ahead.
  Ours does more per byte (sha256 on both sides); the peer does no hashing.
- **No-op rerun** of the example pipeline (every stage cached), whole `alignpipe run` command: workspace in the
  bucket vs a local directory. The bucket adds the cache checks' requests (refs, manifests, listings), the lease
  object and the S3 client's import.

The server runs in this process's threads, so its CPU is counted as ours: both sides pay it equally.
"""

from __future__ import annotations

import os
import random
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from benchmarks import _fixtures as fx
from benchmarks.harness import Bench, Metric, benchmark, sh

MODEL_MB = 50
MBPS = Metric("MB/s", "higher", target=0.9)
SECONDS = Metric("s", "lower", target=0.5)  # the bucket's no-op rerun within 2x the local one's


def _model_dir(root: Path) -> Path:
    """A model-like artifact: one big weights file and a few small ones, random bytes."""
    d = root / "model"
    d.mkdir(parents=True)
    rng = random.Random(0)
    (d / "model.safetensors").write_bytes(rng.randbytes((MODEL_MB - 1) * 2**20))
    for name in ("config.json", "tokenizer.json", "generation_config.json"):
        (d / name).write_bytes(rng.randbytes(300_000))
    return d


def _server(b: Bench) -> tuple[object, dict[str, str]]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "ALIGNPIPE_CACHE": str(b.workdir / "cache")}
    os.environ.update(env)
    return server, env


@benchmark("storage", title="Workspaces in a bucket: transfers and the no-op rerun", peers=(), order=35)
def run(b: Bench) -> None:
    import boto3
    from boto3.s3.transfer import TransferConfig

    from alignpipe.pipeline.cache import ArtifactCache
    from alignpipe.pipeline.store import Store

    server, env = _server(b)
    try:
        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
        s3.create_bucket(Bucket="bench")
        src = _model_dir(b.workdir)
        files = sorted(p.name for p in src.iterdir())
        size_mb = sum((src / f).stat().st_size for f in files) / 2**20
        b.config(artifact_mb=round(size_mb, 1), files=len(files), server="moto ThreadedMotoServer, localhost")
        tcfg = TransferConfig()  # the defaults `aws s3 cp` uses: 8 MB parts, 10 threads
        last: dict[str, str] = {}

        def ours_publish() -> float:
            staging = b.workdir / f"stage-{uuid.uuid4().hex}"
            shutil.copytree(src, staging)
            store = Store(f"s3://bench/ours-{uuid.uuid4().hex}")
            seconds = _timed(lambda: last.__setitem__("id", store.publish(staging, {"kind": "model"}).id))
            last["ws"] = str(store.root)
            return size_mb / seconds

        def ours_fetch() -> float:
            store = Store(last["ws"])
            store.cache = ArtifactCache(b.workdir / f"cache-{uuid.uuid4().hex}", limit=10**12)
            return size_mb / _timed(lambda: store.local_dir(last["id"]))

        def peer_upload() -> float:
            prefix = f"peer-{uuid.uuid4().hex}"
            last["peer"] = prefix
            return size_mb / _timed(lambda: [s3.upload_file(str(src / f), "bench", f"{prefix}/{f}", Config=tcfg)
                                             for f in files])

        def peer_download() -> float:
            out = b.workdir / f"down-{uuid.uuid4().hex}"
            out.mkdir()
            return size_mb / _timed(lambda: [s3.download_file("bench", f"{last['peer']}/{f}", str(out / f),
                                                              Config=tcfg) for f in files])

        b.compare("publish 50 MB model artifact", MBPS, ours=ours_publish, peer=("boto3 s3transfer", peer_upload))
        b.compare("fetch 50 MB model artifact (re-hashed)", MBPS, ours=ours_fetch,
                  peer=("boto3 s3transfer", peer_download))

        # -- the no-op rerun: bucket vs local directory
        cmd = [*fx.alignpipe_exe(), "run", "--example", "-q"]
        local_ws, bucket_ws = b.workdir / "local-ws", "s3://bench/noop"
        sh([*cmd, "-w", local_ws])
        sh([*cmd, "-w", bucket_ws], env={**os.environ, **env})
        b.compare("no-op rerun, example pipeline (4 stages)", SECONDS,
                  ours=lambda: sh([*cmd, "-w", bucket_ws], env={**os.environ, **env}) and None,
                  peer=("local workspace", lambda: sh([*cmd, "-w", local_ws]) and None), repeats=7)
        b.note("The no-op row's ratio is local ÷ bucket: 0.5 is the target (the bucket at most 2× the local "
               "directory's time).")
        b.note("Where the bucket's no-op time goes (measured while optimizing, same machine): importing botocore "
               "and s3transfer ~0.13 s and building the S3 client ~0.1 s (its service model), then 14 requests "
               "(workspace marker, lease create/delete, refs, manifests, listings) against a server in another "
               "process. Until 2026-12-05 S3 went through s3fs, whose import (aiobotocore, aiohttp) alone took "
               "~0.3 s: 0.39x then.")
        b.note("Publish does more than the peer's upload: sha256 of every file (0.033 s for 50 MB), the existence "
               "check and the conditional manifest create (~0.015 s), the payload's fsync (overlapped with the "
               "upload), a rename into this machine's cache. The upload itself is s3transfer, as the peer's: "
               "0.39-0.40 s against 0.38-0.40 s for the same files (profiled 2026-12-05). Through s3fs (until "
               "2026-12-05) it took 0.50-0.55 s: s3fs runs a multi-part upload's parts on one event-loop thread; "
               "publish measured 0.64x then (0.50x while every Store built its own client).")
        b.note("Fetch: one streamed GET per file, read in 64 KB pieces (1 MB reads are fresh mmap-backed "
               "allocations each: 0.17 s instead of 0.08 s for 50 MB), against s3transfer's ranged GETs.")
    finally:
        server.stop()


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
