"""Helpers of the multi-process pipeline tests: the shortened built-in pipeline with per-stage resources, the
real CLI in a subprocess, results and metric curves read back from the journal."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

from pipelines import MINI, rlhf_spec

# MINI, with sft and reward long enough to be killed between checkpoints
SIZES = {**MINI, "sft": {"steps": 100, "checkpoint_every": 10}, "reward": {"steps": 40, "checkpoint_every": 8}}
ONE = {"cpus": 1}


def spec_file(root: Path, ws: Path, resources: dict[str, dict] | None = None, name: str = "p") -> Path:
    """The pipeline writing into `ws`, every stage on one CPU unless `resources` says otherwise."""
    spec = rlhf_spec(ws, SIZES)
    for stage, st in spec["stages"].items():
        st["resources"] = dict((resources or {}).get(stage, ONE))
    path = root / f"{name}-{ws.name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def alignpipe(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alignpipe", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**(env or os.environ), "OMP_NUM_THREADS": "1"})


def result(proc: subprocess.CompletedProcess) -> dict:
    """The run's result event (`--json`), after checking it succeeded."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


def curve(ws: Path, run_id: str, stage: str, name: str = "loss") -> dict[int, float]:
    with sqlite3.connect(ws / ".alignpipe" / "journal.db") as db:
        return dict(db.execute("SELECT step, value FROM metrics WHERE run_id=? AND stage=? AND name=? ORDER BY step",
                               (run_id, stage, name)).fetchall())


def curve_gap(one: dict[int, float], two: dict[int, float]) -> float:
    """The largest per-step difference of two curves, relative to the value where it exceeds 1: fp32 holds ~7
    digits, so a gradient norm of 15 summed in another order differs by ~1e-5 (the reward stage's do: 1.3e-5)."""
    return max(abs(one[s] - two[s]) / max(1.0, abs(one[s])) for s in one)


def stage_log(ws: Path, run_id: str, stage: str) -> str:
    return next((ws / "logs" / run_id).glob(f"{stage}-*.log")).read_text()


def kill_rank_at_first_checkpoint(spec: Path, ws: Path, stage: str, fingerprint: str | None, rank: int) -> dict:
    """Run `--only STAGE --force STAGE`, kill -9 rank `rank` once the stage's first checkpoint is complete, and
    return the failed run's result (the runner reports the stage failed). fingerprint None: the stage's work dir is
    the first one with a checkpoint."""
    import signal
    import time

    cmd = [sys.executable, "-m", "alignpipe", "run", str(spec), "--only", stage, "--force", stage, "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    pattern = f"{fingerprint or '*'}/ckpt/step-*"
    deadline = time.monotonic() + 180
    while not (found := next((ws / "work").glob(pattern), None)):
        assert proc.poll() is None, "finished before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 180 s"
        time.sleep(0.005)
    work = found.parent.parent
    pids = json.loads(next(work.glob("attempts/*/ranks.json")).read_text())
    os.kill(pids[str(rank)], signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1
    return json.loads(out.splitlines()[-1])
