"""kill -9 of the runner at 20 random instants across the shortened RLHF pipeline, rerunning after each: no
partial artifact is ever visible, and the final artifacts are bit-identical to an uninterrupted run's.

The kill instants are random (seeded, printed on failure) delays after each (re)start, so they land in every
stage: while a stage process trains, while it publishes, while the runner checks the cache.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from alignpipe.pipeline.store import Store
from pipelines import TINY, rlhf_spec

KILLS = 20


def start(spec: Path, ws: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "alignpipe", "run", str(spec), "-w", str(ws), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def events(proc: subprocess.Popen):
    for line in proc.stdout:
        if line.startswith("{"):
            yield json.loads(line)


def reference_run(spec: Path, ws: Path) -> tuple[dict[str, dict[str, str]], dict[str, float]]:
    """(outputs by stage, seconds each stage took) of an uninterrupted run."""
    proc = start(spec, ws)
    durations, result = {}, None
    for ev in events(proc):
        if ev.get("event") == "stage" and ev.get("state") == "done":
            durations[ev["stage"]] = ev["duration"]
        result = ev if ev.get("event") == "result" else result
    proc.wait()
    assert proc.returncode == 0 and result is not None
    return {n: st["outputs"] for n, st in result["stages"].items()}, durations


def kill_targets(durations: dict[str, float], rng: random.Random) -> list[tuple[str, float]]:
    """KILLS (stage, seconds into that stage), in pipeline order: every stage at least once, the rest spread in
    proportion to the stages' durations."""
    stages = list(durations)
    extra = rng.choices(stages, weights=[durations[s] for s in stages], k=KILLS - len(stages))
    return sorted((target(s, durations, rng) for s in stages + extra), key=lambda t: stages.index(t[0]))


def target(stage: str, durations: dict[str, float], rng: random.Random) -> tuple[str, float]:
    # within the first half: a stage resumed from a checkpoint finishes sooner than it took uninterrupted
    return stage, rng.uniform(0.0, 0.5 * durations[stage])


def kill_in(spec: Path, ws: Path, durations: dict[str, float], rng: random.Random) -> list[tuple[str, float]]:
    """Run, and kill -9 the runner `seconds` after `stage` starts, for each target in turn (a new run after each
    kill). A target whose stage finishes before its kill came (a resumed stage is quicker) moves to a later
    stage, so KILLS kills are made unless the pipeline ends first. Returns the kills made."""
    stages = list(durations)
    done, pending = [], kill_targets(durations, rng)
    while pending:
        proc = start(spec, ws)
        stage, after = pending[0]
        for ev in events(proc):
            if ev.get("event") == "stage" and ev.get("stage") == stage:
                if ev["state"] == "running":
                    time.sleep(after)
                    proc.send_signal(signal.SIGKILL)
                    done.append((stage, round(after, 2)))
                    pending.pop(0)
                    break
                if ev["state"] in ("cached", "done"):
                    later = stages[stages.index(stage) + 1:]
                    while pending and pending[0][0] == stage:
                        pending.pop(0)
                        if later:
                            pending.append(target(rng.choice(later), durations, rng))
                    pending.sort(key=lambda t: stages.index(t[0]))
                    if not pending:
                        break
                    stage, after = pending[0]
        proc.kill()
        proc.wait()
        no_partial_artifacts(ws)
    return done


def outputs(proc: subprocess.Popen) -> dict[str, dict[str, str]]:
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-2000:]
    result = json.loads(out.strip().splitlines()[-1])
    return {name: s["outputs"] for name, s in result["stages"].items()}


def no_partial_artifacts(ws: Path) -> None:
    store = Store(ws)
    for entry in (ws / "artifacts").iterdir():
        assert store.has(entry.name), f"artifacts/{entry.name} without a manifest is visible"
        assert store.verify(entry.name) == [], f"artifact {entry.name[:12]} is damaged"


@pytest.mark.slow
def test_kill_9_at_20_random_instants_then_rerun_equals_the_uninterrupted_run(tmp_path):
    spec = tmp_path / "p.yaml"
    spec.write_text(yaml.safe_dump(rlhf_spec("ws", TINY), sort_keys=False))
    reference, durations = reference_run(spec, tmp_path / "ref")
    kills = kill_in(spec, tmp_path / "ws", durations, random.Random(11))
    final = outputs(start(spec, tmp_path / "ws"))
    assert final == reference, f"kills: {kills}"
    no_partial_artifacts(tmp_path / "ws")
    assert len(kills) == KILLS and len({s for s, _ in kills}) >= len(durations) - 1, kills
    print(f"{len(kills)} kills in {len({s for s, _ in kills})} of {len(durations)} stages: {kills}")
