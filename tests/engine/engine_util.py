"""Helpers shared by the engine tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from alignpipe import api


def cli(*args, cwd=None, timeout=120, **kw):
    """Run the real CLI in a subprocess."""
    return subprocess.run([sys.executable, "-m", "alignpipe", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, **kw)


def rec(marker, value, **extra):
    """A `teststages:record` stage spec: writes `value`, appends its name to `marker` whenever it executes."""
    return {"uses": "teststages:record", "params": {"marker": str(marker), "value": value}, **extra}


def chain(tmp_path, **over):
    """a -> b -> c, and d on its own."""
    m = tmp_path / "marker"
    stages = {"a": rec(m, 1), "b": rec(m, 2, inputs={"x": "a.out"}), "c": rec(m, 3, inputs={"x": "b.out"}),
              "d": rec(m, 4)}
    for k, v in over.items():
        stages[k] = {**stages[k], **v}
    return {"name": "chain", "seed": 0, "workspace": str(tmp_path / "ws"), "stages": stages}


def executed(tmp_path):
    """Stage names that executed since the last call (read and clear the marker file)."""
    m = tmp_path / "marker"
    names = sorted(m.read_text().split()) if m.exists() else []
    m.write_text("")
    return names


def run(tmp_path, spec, **kw):
    """Validate and run a spec dict in-process (kw: api.run's, e.g. executor=); returns (result, states)."""
    res = api.run(api.from_dict(spec, base_dir=tmp_path), **kw)
    return res, {n: s.state for n, s in res.stages.items()}


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead
        return f.read().split(")")[-1].split()[0] != "Z"


def assert_dies(*pids, timeout=10.0):
    """Every pid is gone within `timeout` seconds (polled, no fixed sleep)."""
    deadline = time.time() + timeout
    while any(alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids), f"still alive: {[p for p in pids if alive(p)]}"
