"""FSDP2 (`fully_shard`) on gloo/CPU: sft with `sharding: fsdp` over 2 processes follows the 1-process loss curve,
checkpoints every rank's shards (torch.distributed.checkpoint) into the stage's atomic checkpoint, and a kill -9 of a
rank followed by a rerun resumes from them to the uninterrupted run's artifact."""

from __future__ import annotations

import shutil

import pytest
from dp_util import alignpipe, curve, curve_gap, kill_rank_at_first_checkpoint, result, spec_file, stage_log

from alignpipe.pipeline.store import Store

pytestmark = pytest.mark.slow
FSDP = {"cpus": 1, "procs_per_node": 2, "sharding": "fsdp"}


def test_fsdp_sft_follows_the_curve_and_resumes_after_a_kill(upstream, tmp_path):
    fp = Store(upstream.ws).get(upstream.result["stages"]["sft"]["outputs"]["model"]).manifest["producer"][
        "fingerprint"]
    ws_a, ws_b = tmp_path / "a", tmp_path / "b"
    for ws in (ws_a, ws_b):
        shutil.copytree(upstream.ws, ws)
    res = result(alignpipe("run", spec_file(tmp_path, ws_a, {"sft": FSDP}), "--only", "sft", "--force", "sft",
                           "--json"))
    for metric in ("loss", "grad_norm"):  # the gradient norm: clipping sees the shards' gradients
        one = curve(upstream.ws, upstream.result["run_id"], "sft", metric)
        sharded = curve(ws_a, res["run_id"], "sft", metric)
        assert len(one) == 100 and curve_gap(one, sharded) < 1e-5, metric

    spec_b = spec_file(tmp_path, ws_b, {"sft": FSDP})
    failed = kill_rank_at_first_checkpoint(spec_b, ws_b, "sft", fp, rank=1)
    assert failed["stages"]["sft"]["state"] == "failed"
    assert (next((ws_b / "work" / fp / "ckpt").glob("step-*")) / "sharded" / ".metadata").is_file()
    rerun = result(alignpipe("run", spec_b, "--only", "sft", "--force", "sft", "--json"))
    assert "resuming from checkpoint step" in stage_log(ws_b, rerun["run_id"], "sft")
    assert rerun["stages"]["sft"]["outputs"] == res["stages"]["sft"]["outputs"]
