"""A real local Ray cluster of two nodes: two `ray start` processes (a head and a worker) on this machine, each with
its own temp dir, 1 CPU each; started and stopped by the test fixture that uses it.

Isolation from other Ray users of the machine: the temp dirs are ours (Ray writes the cluster's address file
there, not in /tmp/ray, so nobody's `ray.init()` finds this cluster), HOME is a fresh directory (no one's
~/.ray settings apply) and token authentication is off for these processes. Stopping kills exactly the
processes started for these temp dirs, by pid (never `ray stop`, which stops every Ray on the machine)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alignpipe.distributed.launch import free_port


def ray_env(home: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


@contextmanager
def two_node_cluster(cpus_per_node: int = 1) -> Iterator[tuple[str, dict[str, str]]]:
    """(address, environment for clients) of a running two-node cluster; torn down on exit."""
    root = Path(tempfile.mkdtemp(prefix="ap-ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = ray_env(root / "home")
    (root / "home").mkdir()
    ray = str(Path(sys.executable).with_name("ray"))
    port = free_port()
    try:
        start = [ray, "start", f"--num-cpus={cpus_per_node}", "--disable-usage-stats"]
        subprocess.run([*start, "--head", f"--port={port}", f"--temp-dir={root / 'a'}", "--include-dashboard=false"],
                       env=env, check=True, capture_output=True, timeout=180)
        address = (root / "a" / "ray_current_cluster").read_text().strip()
        subprocess.run([*start, f"--address={address}", f"--temp-dir={root / 'b'}"], env=env, check=True,
                       capture_output=True, timeout=180)
        yield address, env
    finally:
        _kill_processes_of(root)
        shutil.rmtree(root, ignore_errors=True)


def _pids_of(root: Path) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if str(root).encode() in (d / "cmdline").read_bytes():
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def _kill_processes_of(root: Path, grace: float = 10.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _pids_of(root):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while _pids_of(root) and time.monotonic() < deadline:
            time.sleep(0.2)
