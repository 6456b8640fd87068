"""PPO's four models placed apart make the same policy and value model as colocated: split (actor+critic |
reference+reward model) as two processes, separate (each model its own) as four, explicit groups (the critic with
the actor, or apart with a frozen model), offload in one — bit for bit on CPU, on the shortened built-in pipeline. A
critic apart trains in its own rank; kill -9 of it after a checkpoint, then a rerun under another placement, resumes
from that checkpoint to the same artifacts. The plan is in the manifest; a layout the run time cannot run (a critic
apart on 2 processes beside 1 actor process) is refused before any compute. Replicas (all four models on each
process, or beside a group of frozen models): test_ppo_replicas.py."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from dp_util import alignpipe, kill_rank_at_first_checkpoint, result, spec_file, stage_log

from alignpipe.pipeline.store import Store

pytestmark = pytest.mark.slow

CASES = [
    ("split", {"cpus": 1, "procs_per_node": 2, "placement": "split"}, "split",
     {1: "reference, reward_model"}),
    ("groups", {"cpus": 0.5, "procs_per_node": 3, "placement": [["actor", "critic"], ["reference"],
                                                                ["reward_model"]]}, "groups",
     {1: "reference", 2: "reward_model"}),
    ("offload", {"cpus": 1, "placement": "offload"}, "offload", {}),
    ("separate", {"cpus": 0.5, "procs_per_node": 4, "placement": "separate"}, "separate",
     {1: "critic, and trained the critic", 2: "reference", 3: "reward_model"}),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_placed_apart_equals_colocated(upstream, colocated_ppo, tmp_path, case):
    _, resources, layout, served = case
    ws = tmp_path / "ws"
    shutil.copytree(upstream.ws, ws)
    res = result(alignpipe("run", spec_file(tmp_path, ws, {"ppo": resources}), "--only", "ppo", "--json"))
    assert res["stages"]["ppo"]["outputs"] == colocated_ppo
    log = stage_log(ws, res["run_id"], "ppo")
    for rank, models in served.items():
        assert f"[ppo rank {rank}] scored 4 rollout batches with {models}" in log
    plan = Store(ws).get(colocated_ppo["policy"]).manifest["summary"]["placement"]
    assert plan["layout"] == layout and len(plan["groups"]) == 1 + len(served) + (layout == "offload")


def test_a_critic_apart_on_more_processes_than_the_actor_is_refused_before_compute(upstream, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(upstream.ws, ws)
    path = spec_file(tmp_path, ws, {"ppo": {"cpus": 0.5, "procs_per_node": 3,
                                            "placement": [["actor", "reference"], ["critic", "reward_model"]]}})
    spec = yaml.safe_load(path.read_text())
    spec["stages"]["ppo"]["retries"] = 2
    path.write_text(yaml.safe_dump(spec))
    r = alignpipe("run", path, "--only", "ppo", "--json")
    assert r.returncode == 1
    ppo = json.loads(r.stdout.splitlines()[-1])["stages"]["ppo"]
    assert ppo["attempts"] == 1  # exit 2: bad input, not retried
    assert "critic+reward_model on 2 devices gives the critic apart from the actor another number of processes " \
           "than the actor: each actor replica trains with a critic replica of its own" in ppo["error"]


def _with_params(path, **params):
    spec = yaml.safe_load(path.read_text())
    spec["stages"]["ppo"]["params"].update(params)
    path.write_text(yaml.safe_dump(spec))
    return path


def test_kill_the_critics_rank_then_resume_under_another_placement(upstream, colocated_ppo, tmp_path):
    """The critic's files travel into rank 0's checkpoint in the colocated format: a run killed while its critic
    trained apart resumes with the critic beside the actor (split), to the colocated artifacts."""
    ws = tmp_path / "ws"
    shutil.copytree(upstream.ws, ws)
    apart = _with_params(spec_file(tmp_path, ws, {"ppo": {"cpus": 0.5, "procs_per_node": 4, "placement": "separate"}},
                                   name="apart"), checkpoint_every=2)
    failed = kill_rank_at_first_checkpoint(apart, ws, "ppo", None, rank=1)["stages"]["ppo"]
    assert failed["state"] == "failed" and "rank 1 killed by SIGKILL" in failed["error"]
    checkpoint = next((ws / "work").glob("*/ckpt/step-*2"))
    assert {"model-critic.safetensors", "optim-critic.pt", "sched-critic.pt", "model-policy.safetensors"} <= {
        f.name for f in checkpoint.iterdir()}
    split = _with_params(spec_file(tmp_path, ws, {"ppo": {"cpus": 1, "procs_per_node": 2, "placement": "split"}},
                                   name="split"), checkpoint_every=2)
    rerun = result(alignpipe("run", split, "--only", "ppo", "--json"))
    assert "resuming from checkpoint step 2" in stage_log(ws, rerun["run_id"], "ppo")
    assert rerun["stages"]["ppo"]["outputs"] == colocated_ppo



def test_a_single_pass_with_the_critic_apart_equals_colocated(upstream, tmp_path):
    """The critic apart with a frozen model beside it (actor+reference | critic+reward model), at one optimizer step
    per rollout (ppo_epochs 1, one minibatch): each half's update consumes the graph of the forward that computed
    log π_old or V_old, in its own rank. (The multi-step path with the critic apart: the separate case above.)"""
    outputs = {}
    for name, resources in (("colocated", {"cpus": 1}),
                            ("apart", {"cpus": 1, "procs_per_node": 2, "placement": [["actor", "reference"],
                                                                                     ["critic", "reward_model"]]})):
        ws = tmp_path / name
        shutil.copytree(upstream.ws, ws)
        path = _with_params(spec_file(tmp_path, ws, {"ppo": resources}), ppo_epochs=1)
        res = result(alignpipe("run", path, "--only", "ppo", "--json"))
        outputs[name] = res["stages"]["ppo"]["outputs"]
    assert "[ppo rank 1] scored 4 rollout batches with critic, reward_model, and trained the critic" in \
        stage_log(ws, res["run_id"], "ppo")
    assert outputs["apart"] == outputs["colocated"]
