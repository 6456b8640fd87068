"""PPO's four models placed apart make the same policy as colocated: split (actor+critic | reference+reward model)
as two processes, explicit groups as three, offload in one — bit for bit on CPU, on the shortened built-in
pipeline. The plan is in the manifest; a layout the run time cannot run (split over 3 processes: a replicated
group beside another) is refused before any compute. Replicas of all four models: test_ppo_replicas.py."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from dp_util import alignpipe, result, spec_file, stage_log

from alignpipe.pipeline.store import Store

pytestmark = pytest.mark.slow

CASES = [
    ("split", {"cpus": 1, "procs_per_node": 2, "placement": "split"}, "split",
     {1: "reference, reward_model"}),
    ("groups", {"cpus": 0.5, "procs_per_node": 3, "placement": [["actor", "critic"], ["reference"],
                                                                ["reward_model"]]}, "groups",
     {1: "reference", 2: "reward_model"}),
    ("offload", {"cpus": 1, "placement": "offload"}, "offload", {}),
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


def test_replicas_of_one_group_beside_another_are_refused_before_compute(upstream, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(upstream.ws, ws)
    path = spec_file(tmp_path, ws, {"ppo": {"cpus": 0.5, "procs_per_node": 3, "placement": "split"}})
    spec = yaml.safe_load(path.read_text())
    spec["stages"]["ppo"]["retries"] = 2
    path.write_text(yaml.safe_dump(spec))
    r = alignpipe("run", path, "--only", "ppo", "--json")
    assert r.returncode == 1
    ppo = json.loads(r.stdout.splitlines()[-1])["stages"]["ppo"]
    assert ppo["attempts"] == 1  # exit 2: bad input, not retried
    assert "needs sharded groups or data-parallel replicas of a group beside other groups, which PPO does not " \
           "run yet" in ppo["error"]
