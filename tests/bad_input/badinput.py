"""The bad-input harness: run the real CLI on one bad input, in a subprocess, and check what a user sees.

Every case must
- exit with its documented code (2: bad input; 1: a run whose stage failed, or `verify` finding corruption),
- print no traceback,
- print a message matching each of its patterns (they name the file, stage and field, and the fix),
- change nothing on disk outside what it is allowed to write (a snapshot of the case's directory, every file's
  bytes, before and after; a failed `run` may add journal rows, logs and work dirs, never artifacts or refs).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

RUN_WRITES = (r"^ws/\.alignpipe/", r"^ws/logs/", r"^ws/work/")  # what a failed run records about itself


@dataclass
class Case:
    id: str
    argv: list[str]  # `alignpipe` arguments; {tmp}, {ws}, {gpt2}, {llama} are filled in
    code: int
    patterns: list[str]  # regexes the combined output must match
    setup: Callable[[Path], None] | None = None  # builds the case's files in its directory
    writes: tuple[str, ...] = ()  # regexes of paths (relative to the case dir) that may change
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None  # run as this user (runuser), for permission cases


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            rel = p.relative_to(root).as_posix()
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if not p.is_symlink() else "link"
    return out


def changed(before: dict[str, str], after: dict[str, str], allowed: tuple[str, ...]) -> list[str]:
    paths = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    return sorted(p for p in paths if not any(re.search(a, p) for a in allowed))


def run_case(case: Case, root: Path, models: dict[str, Path]) -> subprocess.CompletedProcess:
    root.mkdir(parents=True, exist_ok=True)
    if case.setup:
        case.setup(root)
    fill = {"tmp": str(root), "ws": str(root / "ws"), **{k: str(v) for k, v in models.items()}}
    argv = [a.format(**fill) for a in case.argv]
    before = snapshot(root)
    cmd = [sys.executable, "-m", "alignpipe", *argv]
    if case.user:
        cmd = ["runuser", "-u", case.user, "--", *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "ALIGNPIPE_RETRY_BASE_DELAY": "0.05", **case.env}
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=180, env=env)
    out = r.stdout + r.stderr
    assert "Traceback" not in out, f"{case.id}: traceback\n{out}"
    assert r.returncode == case.code, f"{case.id}: exit {r.returncode}, expected {case.code}\n{out}"
    for pattern in case.patterns:
        assert re.search(pattern, out, re.S), f"{case.id}: no match for {pattern!r} in\n{out}"
    diff = changed(before, snapshot(root), case.writes)
    assert not diff, f"{case.id}: changed on disk: {diff}\n{out}"
    return r


# -- builders for setups ---------------------------------------------------------------------------------------
def write(rel: str, text: str | bytes) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(text if isinstance(text, bytes) else text.encode())

    return make


def chain(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        for step in steps:
            step(root)

    return make


def copy_tree(src: Path, rel: str) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        shutil.copytree(src, root / rel, symlinks=True)

    return make


def ids(cases: list[Case]) -> list[str]:
    assert len({c.id for c in cases}) == len(cases), "case ids must be unique"
    return [c.id for c in cases]
