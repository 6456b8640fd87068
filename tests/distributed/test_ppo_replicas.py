"""PPO with data-parallel actor replicas on the shortened built-in pipeline (gloo): 2 processes with all four models
on each; split over 3 — 2 replicas of actor+critic beside one process of reference+reward model that scores for
both; and the critic apart over 4 — 2 replicas of actor+reference, each with a critic+reward model replica of its
own, the value halves of the update data-parallel among the critics. Each follows the 1-process run's curves (each
prompt's sample drawn as one process draws it, advantages, KL and statistics over the global batch, minibatch
gradients summed over the replicas only), records its world size and replicas, and a kill -9 of a replica followed
by a rerun publishes its uninterrupted artifact."""

from __future__ import annotations

import shutil

import pytest
import yaml
from dp_util import alignpipe, curve, curve_gap, kill_rank_at_first_checkpoint, result, spec_file, stage_log

from alignpipe.pipeline.store import Store

pytestmark = pytest.mark.slow
TWO = {"cpus": 1, "procs_per_node": 2}
SPLIT3 = {"cpus": 0.5, "procs_per_node": 3, "placement": "split"}  # actor+critic on 2 | reference+reward_model on 1
# actor+reference on 2 | critic+reward_model on 2: each actor replica with a critic replica of its own
APART4 = {"cpus": 0.5, "procs_per_node": 4, "placement": [["actor", "reference"], ["critic", "reward_model"]]}
# minibatches of 4 of the 8 rollout rows: a rank holds 0 to 4 rows of each; a checkpoint after rollout 2 of 4
PPO = {"minibatch_size": 4, "checkpoint_every": 2}


def _spec(root, ws, resources: dict | None, name: str):
    path = spec_file(root, ws, {"ppo": resources} if resources else None, name=name)
    spec = yaml.safe_load(path.read_text())
    spec["stages"]["ppo"]["params"].update(PPO)
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def runs(upstream):
    """ppo as 1 process, as 2 replicas and split over 3, each on its own copy of the upstream workspace."""
    out = {}
    for name, resources in (("one", None), ("two", TWO), ("split3", SPLIT3), ("apart4", APART4)):
        ws = upstream.root / f"ppo-replicas-{name}"
        shutil.copytree(upstream.ws, ws)
        out[name] = ws, result(alignpipe("run", _spec(upstream.root, ws, resources, name), "--only", "ppo", "--json"))
    return out


@pytest.mark.parametrize("name", ["two", "split3", "apart4"])
def test_replicas_follow_the_one_process_curves(runs, name):
    (ws1, res1), (ws2, res2) = runs["one"], runs[name]
    for metric in ("score", "kl", "policy_loss", "value_loss", "policy_grad_norm", "value_grad_norm", "beta"):
        one, two = curve(ws1, res1["run_id"], "ppo", metric), curve(ws2, res2["run_id"], "ppo", metric)
        assert len(one) == 4 and one.keys() == two.keys()
        assert curve_gap(one, two) < 1e-5, metric
    # the same samples: equal lengths per rollout
    assert curve(ws1, res1["run_id"], "ppo", "response_length") == curve(ws2, res2["run_id"], "ppo", "response_length")
    policy = Store(ws2).get(res2["stages"]["ppo"]["outputs"]["policy"]).manifest["summary"]
    assert policy["world_size"] == {"two": 2, "split3": 3, "apart4": 4}[name] and policy["placement"]["replicas"] == 2
    assert policy["placement"]["layout"] == {"two": "colocated", "split3": "split", "apart4": "groups"}[name]
    log = stage_log(ws2, res2["run_id"], "ppo")
    if name == "split3":  # one process scores both replicas' shares of every rollout batch
        assert "[ppo rank 2] scored 8 rollout batches with reference, reward_model for trainer ranks 0, 1" in log
    if name == "apart4":  # a critic replica per actor replica
        for rank, trainer in ((2, 0), (3, 1)):
            assert (f"[ppo rank {rank}] scored 4 rollout batches with critic, reward_model, and trained the critic "
                    f"(replica of trainer rank {trainer})") in log
    assert Store(ws1).get(res1["stages"]["ppo"]["outputs"]["policy"]).manifest["summary"]["world_size"] == 1


@pytest.mark.parametrize(("name", "resources", "rank"), [("two", TWO, 1), ("apart4", APART4, 3)],
                         ids=["two", "apart4-critic-replica"])  # (apart4's checkpoint is the trainers' subgroup's)
def test_kill_a_replica_then_rerun_resumes_to_the_uninterrupted_artifact(upstream, runs, tmp_path, name, resources,
                                                                         rank):
    ws2, res2 = runs[name]
    ws = tmp_path / "ws"
    shutil.copytree(upstream.ws, ws)
    path = _spec(tmp_path, ws, resources, "kill")
    fp = Store(ws2).get(res2["stages"]["ppo"]["outputs"]["policy"]).manifest["producer"]["fingerprint"]
    failed = kill_rank_at_first_checkpoint(path, ws, "ppo", fp, rank=rank)["stages"]["ppo"]
    assert failed["state"] == "failed" and f"rank {rank} killed by SIGKILL" in failed["error"]
    rerun = result(alignpipe("run", path, "--only", "ppo", "--json"))
    assert "resuming from checkpoint step 2" in stage_log(ws, rerun["run_id"], "ppo")
    assert rerun["stages"]["ppo"]["outputs"] == res2["stages"]["ppo"]["outputs"]
