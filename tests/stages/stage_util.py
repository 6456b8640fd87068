"""Helpers shared by the stage tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def manifest(out: Path) -> dict:
    return json.loads((Path(out) / "manifest.json").read_text())


def kill_at_first_checkpoint_then_rerun(args: list[str], out: Path, expect_log: str = "resuming from checkpoint step"
                                        ) -> str:
    """Run `alignpipe stage run ARGS -o OUT` as a process, kill -9 it once a complete checkpoint exists (in
    OUT.work/<fingerprint>/ckpt), rerun the same command to the end; returns the artifact id."""
    cmd = [sys.executable, "-m", "alignpipe", "stage", "run", *args, "-o", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(Path(f"{out}.work").glob("*/ckpt/step-*")):  # complete checkpoints only (tmp dirs are hidden)
        assert proc.poll() is None, f"finished before its first checkpoint: {proc.communicate()[1]}"
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.005)
    assert proc.poll() is None, "finished before it could be killed; make the run longer"
    proc.kill()
    proc.communicate()
    assert not (Path(out) / "manifest.json").exists()
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert expect_log in rerun.stderr
    return manifest(out)["id"]


def crash_at_third_sampling_then_resume(monkeypatch: pytest.MonkeyPatch, run: Callable[[Path], dict],
                                        tmp_path: Path) -> tuple[str, str, int]:
    """Run a sampling stage (run(out) -> manifest) straight; then again, interrupted at its third sample_responses
    call, and rerun to the end. Returns (straight id, resumed id, sample_responses calls of the rerun)."""
    import alignpipe.models.forward as forward

    straight = run(tmp_path / "straight")["id"]
    real, calls = forward.sample_responses, []

    def crash_on_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(forward, "sample_responses", crash_on_third_batch)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed")
    resumed_calls = []
    monkeypatch.setattr(forward, "sample_responses", lambda *a, **k: resumed_calls.append(1) or real(*a, **k))
    return straight, run(tmp_path / "resumed")["id"], len(resumed_calls)
