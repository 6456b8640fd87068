"""MLflow tracking's cost to training (issue 14: "never slows a training step measurably").

- **The SFT stage of the default pipeline, re-executed** (`alignpipe run --until sft --force sft`) with MLflow
  tracking on (`--mlflow sqlite:///...`: a parent run, a nested run for the stage, its params, tags, the metric
  points, the log and summary as artifacts) vs off, interleaved. The tracker runs in the runner process and drains
  a queue in a background thread while the stage trains; the stage process never talks to MLflow. Measured: the
  stage's duration as the journal records it (the stage process's start to its publication). Peer: the same
  command without tracking; about 1 is the goal.
"""

from __future__ import annotations

import sqlite3

from benchmarks import _fixtures as fx
from benchmarks.harness import Bench, Metric, benchmark, sh

SECONDS = Metric("s", "lower", target=0.95)  # tracking costs at most 5 %
NOTE = (
        'History: before 2026-12-05 tracking measured **0.72×** on 2 idle cores (20.4 s vs 14.8 s). Not MLflo'
        "w's sends: the runner's tracker thread imports mlflow (~2.4 s of CPU) while the stage process probes"
        ' the load to pick its OpenMP wait policy, so the stage saw 1.5 "other" cores and chose PASSIVE threa'
        'ds (slower for this small model; `pipeline/cpu.py`). Fix: the tracker thread runs at nice 19, the st'
        "age's probe leaves niced CPU time out, and metric points are sent every 2 s in one batch. Each stage"
        " log's first line names the policy it chose.")


def _stage_seconds(ws) -> float:
    """The newest executed sft attempt's duration, from the journal."""
    db = sqlite3.connect(f"file:{ws / '.alignpipe' / 'journal.db'}?mode=ro", uri=True)
    try:
        start, end = db.execute("SELECT started, ended FROM attempts WHERE stage = 'sft' AND cache_hit = 0 "
                                "ORDER BY started DESC LIMIT 1").fetchone()
    finally:
        db.close()
    return end - start


@benchmark("mlflow_tracking", title="MLflow tracking: its cost to a training stage", peers=(), order=48)
def run(b: Bench) -> None:
    fx.rlhf_artifacts(until="sft")
    ws = fx.WORKSPACE
    env = fx.stage_env()
    cmd = [*fx.alignpipe_exe(), "run", "-w", str(ws), "--until", "sft", "--force", "sft", "-q"]
    tracked = [*cmd, "--mlflow", f"sqlite:///{b.workdir / 'mlflow.db'}"]

    def timed(argv: list[str]):
        def sample() -> float:
            sh(argv, env=env)
            return _stage_seconds(ws)
        return sample

    b.compare("sft stage re-executed (its duration in the journal)", SECONDS, ours=timed(tracked),
              peer=("the same, no tracking", timed(cmd)), repeats=4)
    b.config(stage="sft of the default pipeline (~1M-param LM, 3 epochs)", tracking="mlflow-skinny, sqlite:/// URI")
    b.note(NOTE)
