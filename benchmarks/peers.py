"""The peer tools' virtual environments (made by setup_peers.sh): where they are, make them on demand."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from benchmarks.harness import ROOT

SETUP = ROOT / "setup_peers.sh"
# Every dvc call the benchmarks make: no analytics, no update check, no interactive pager.
DVC_ENV = {"DVC_NO_ANALYTICS": "1", "DVC_NO_UPDATER": "1", "DVC_IGNORE_ISATTY": "1"}


def venv(peer: str) -> Path:
    return ROOT / f".venv-{peer}"


def bin_path(peer: str, exe: str) -> Path:
    return venv(peer) / "bin" / exe


def ensure(peer: str) -> Path:
    """The peer's venv, created by setup_peers.sh if it does not exist yet."""
    v = venv(peer)
    if not (v / "bin" / "python").exists():
        subprocess.run(["bash", str(SETUP), peer], check=True)
    return v


def version(peer: str) -> str | None:
    """The peer tool's version as its own venv reports it."""
    py = bin_path(peer, "python")
    if not py.exists():
        return None
    p = subprocess.run([str(py), "-c", f"from importlib.metadata import version; print(version({peer!r}))"],
                       capture_output=True, text=True, env={**os.environ, **DVC_ENV})
    return p.stdout.strip() or None
