from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def example_ws(tmp_path_factory) -> Path:
    """A finished workspace of the torch-free example pipeline, copied into cases that need one."""
    root = tmp_path_factory.mktemp("example_ws")
    subprocess.run([sys.executable, "-m", "alignpipe", "run", "--example", "-w", str(root / "ws"), "-q"], check=True,
                   capture_output=True, env={**os.environ, "ALIGNPIPE_RETRY_BASE_DELAY": "0.05"})
    return root / "ws"
