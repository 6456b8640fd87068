"""A real PostgreSQL server for the tests: Debian's postgresql binaries (scripts/system_deps.sh), a cluster made
with initdb in a temp dir and started with pg_ctl on a free localhost port, as the postgres user (initdb refuses
root); stopped at the end. No system service is involved."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"no {name}: run `bash scripts/system_deps.sh` (Debian's postgresql package)")
    return found[-1]


def _as_postgres(*cmd: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a URL postgresql://postgres@127.0.0.1:PORT/alignpipe (trust authentication on localhost)."""
    root = tempfile.mkdtemp(prefix="alignpipe-pg-")
    data = os.path.join(root, "data")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run(_as_postgres(_bin("initdb"), "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"),
                   check=True, capture_output=True)
    subprocess.run(_as_postgres(_bin("pg_ctl"), "-D", data, "-w", "-l", os.path.join(root, "log"), "-o",
                                f"-h 127.0.0.1 -p {port} -k {root} -F", "start"), check=True, capture_output=True)
    try:
        subprocess.run(_as_postgres(_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                                    "alignpipe"), check=True, capture_output=True)
        yield f"postgresql://postgres@127.0.0.1:{port}/alignpipe"
    finally:
        subprocess.run(_as_postgres(_bin("pg_ctl"), "-D", data, "-m", "immediate", "stop"), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
