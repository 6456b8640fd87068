"""Helpers shared by the engine tests."""

from __future__ import annotations

import subprocess
import sys


def cli(*args, cwd=None, timeout=120, **kw):
    """Run the real CLI in a subprocess."""
    return subprocess.run([sys.executable, "-m", "alignpipe", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, **kw)
