"""DDP with gloo, 2 processes, on the shortened built-in pipeline: sft and reward follow the 1-process loss curves
(same samples per step, within 1e-5 per step), record the world size, and a kill -9 of either rank followed by a
rerun resumes to the artifact of an uninterrupted 2-process run, bit for bit."""

from __future__ import annotations

import shutil

import pytest
from dp_util import SIZES, alignpipe, curve, curve_gap, kill_rank_at_first_checkpoint, result, spec_file, stage_log

from alignpipe.pipeline.store import Store

pytestmark = pytest.mark.slow
TWO = {"cpus": 1, "procs_per_node": 2}


@pytest.fixture(scope="module")
def one_proc(upstream):
    """The pipeline up to reward, every stage one process (the session's upstream workspace)."""
    return upstream.root, upstream.ws, upstream.result


@pytest.fixture(scope="module")
def two_procs(one_proc):
    """reward, then sft, rerun as 2 processes each on a copy of that workspace (reward first: it reads the
    1-process sft model, as the 1-process reward did)."""
    root, ws1, _ = one_proc
    ws = root / "ws2"
    shutil.copytree(ws1, ws)
    p = spec_file(root, ws, {"sft": TWO, "reward": TWO})
    runs = {stage: result(alignpipe("run", str(p), "--only", stage, "--force", stage, "--json"))
            for stage in ("reward", "sft")}
    return ws, runs


@pytest.mark.parametrize("stage", ["sft", "reward"])
def test_two_processes_follow_the_one_process_loss_curve(one_proc, two_procs, stage):
    _, ws1, res1 = one_proc
    ws2, runs = two_procs
    for metric in ("loss", "grad_norm"):
        one, two = curve(ws1, res1["run_id"], stage, metric), curve(ws2, runs[stage]["run_id"], stage, metric)
        assert len(one) == SIZES[stage]["steps"] and one.keys() == two.keys()
        assert curve_gap(one, two) < 1e-5, metric
    tokens = "tokens" if stage == "sft" else "pairs"  # the same samples in every step
    assert curve(ws1, res1["run_id"], stage, tokens) == curve(ws2, runs[stage]["run_id"], stage, tokens)
    store1, store2 = Store(ws1), Store(ws2)
    art1 = store1.get(res1["stages"][stage]["outputs"]["model"])
    art2 = store2.get(runs[stage]["stages"][stage]["outputs"]["model"])
    assert art1.manifest["summary"]["world_size"] == 1 and art2.manifest["summary"]["world_size"] == 2
    # the same artifact shape: files, summary (reward: normalization folded, calibration bins) and config
    assert [(f["path"], f["size"]) for f in art1.manifest["files"]] == [(f["path"], f["size"])
                                                                          for f in art2.manifest["files"]]
    assert art1.manifest["summary"].keys() == art2.manifest["summary"].keys()
    assert (art1.path / "config.json").read_text() == (art2.path / "config.json").read_text()


@pytest.mark.parametrize("stage,rank", [("sft", 1), ("reward", 0)])
def test_kill_a_rank_then_rerun_resumes_to_the_uninterrupted_artifact(one_proc, two_procs, tmp_path, stage, rank):
    _, ws1, res1 = one_proc
    _, runs = two_procs
    ws = tmp_path / "ws3"
    shutil.copytree(ws1, ws)
    p = spec_file(tmp_path, ws, {"sft": TWO, "reward": TWO})
    fp = Store(ws1).get(res1["stages"][stage]["outputs"]["model"]).manifest["producer"]["fingerprint"]
    failed = kill_rank_at_first_checkpoint(p, ws, stage, fp, rank)["stages"][stage]
    assert failed["state"] == "failed"
    assert f"rank {rank} killed by SIGKILL; stopping the other ranks" in failed["error"]
    rerun = result(alignpipe("run", str(p), "--only", stage, "--force", stage, "--json"))
    assert "resuming from checkpoint step" in stage_log(ws, rerun["run_id"], stage)
    assert rerun["stages"][stage]["outputs"] == runs[stage]["stages"][stage]["outputs"]
