"""Ranks as Ray actors on a real two-node local Ray cluster (tests/distributed/ray_cluster.py): a 2-rank DDP sft
stage with one rank per node follows the 1-process loss curve; PPO split (actor+critic | reference+reward model),
and the critic apart (actor+reference | critic+reward model, the update split between the two), as two Ray actors
on two nodes make the colocated run's policy and value model; a failing rank stops the other; nodes beyond the
cluster are refused at validation."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
import yaml
from dp_util import alignpipe, curve, result, spec_file, stage_log
from engine_util_shim import assert_dies
from ray_cluster import two_node_cluster

from alignpipe.pipeline.store import Store

pytestmark = pytest.mark.slow
ONE_PER_NODE = {"cpus": 1, "nodes": 2}


@pytest.fixture(scope="module")
def cluster():
    with two_node_cluster() as c:
        yield c


def on_ray(cluster, *args):
    address, env = cluster
    return alignpipe(*args, "--executor", "ray", "--ray-address", address, env={**env, "PYTHONPATH":
                                                                               os.environ["PYTHONPATH"]})


def ranks_on_nodes(log: str) -> list[tuple[str, str]]:
    return re.findall(r"\[launch\] rank (\d) on node (\w+)", log)


def test_two_node_ddp_sft_one_rank_per_node(cluster, upstream, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(upstream.ws, ws)
    res = result(on_ray(cluster, "run", spec_file(tmp_path, ws, {"sft": ONE_PER_NODE}), "--only", "sft", "--force",
                        "sft", "--json"))
    nodes = ranks_on_nodes(stage_log(ws, res["run_id"], "sft"))
    assert [r for r, _ in nodes] == ["0", "1"] and nodes[0][1] != nodes[1][1]
    one, two = curve(upstream.ws, upstream.result["run_id"], "sft"), curve(ws, res["run_id"], "sft")
    assert len(one) == 100 and max(abs(one[s] - two[s]) for s in one) < 1e-5
    assert Store(ws).get(res["stages"]["sft"]["outputs"]["model"]).manifest["summary"]["world_size"] == 2


@pytest.mark.parametrize(("placement", "served"), [
    ("split", "reference, reward_model"),
    ([["actor", "reference"], ["critic", "reward_model"]], "critic, reward_model, and trained the critic"),
], ids=["split", "critic-apart"])
def test_ppo_placed_apart_as_two_ray_actors_makes_the_colocated_artifacts(cluster, upstream, colocated_ppo, tmp_path,
                                                                          placement, served):
    ws = tmp_path / "ws"
    shutil.copytree(upstream.ws, ws)
    res = result(on_ray(cluster, "run", spec_file(tmp_path, ws, {"ppo": {**ONE_PER_NODE, "placement": placement}}),
                        "--only", "ppo", "--json"))
    log = stage_log(ws, res["run_id"], "ppo")
    nodes = ranks_on_nodes(log)
    assert len(nodes) == 2 and nodes[0][1] != nodes[1][1]
    assert f"[ppo rank 1] scored 4 rollout batches with {served}" in log
    assert res["stages"]["ppo"]["outputs"] == colocated_ppo


def test_a_failing_rank_under_ray_stops_the_other(cluster, tmp_path):
    trace = tmp_path / "trace.jsonl"
    spec = {"name": "f", "workspace": str(tmp_path / "ws"), "stages": {"f": {
        "uses": "rankstages:one_fails", "params": {"trace": str(trace), "bad": 1, "how": "crash"},
        "resources": ONE_PER_NODE}}}
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(spec))
    r = on_ray(cluster, "run", tmp_path / "f.yaml", "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout.splitlines()[-1])["stages"]["f"]["state"] == "failed"
    assert_dies(*[json.loads(line)["pid"] for line in trace.read_text().splitlines()])


def test_nodes_beyond_the_cluster_are_refused(cluster, tmp_path):
    spec = {"name": "n", "workspace": str(tmp_path / "ws"), "stages": {"f": {
        "uses": "rankstages:ranks", "params": {"trace": str(tmp_path / "t"), "seconds": 0},
        "resources": {"cpus": 1, "nodes": 3}}}}
    (tmp_path / "n.yaml").write_text(yaml.safe_dump(spec))
    r = on_ray(cluster, "run", tmp_path / "n.yaml")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "stages.f.resources.nodes: asks for 3 nodes but the cluster has 2" in r.stderr
