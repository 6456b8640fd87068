"""Ranks as Ray actors: a 2-rank DDP sft stage on a real two-node local Ray cluster, one rank per node, follows
the 1-process loss curve; a failing rank fails the stage and stops the other; nodes beyond the cluster are refused
at validation."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys

import pytest
import yaml
from engine_util_shim import assert_dies
from ray_cluster import two_node_cluster

from alignpipe.pipeline.store import Store
from pipelines import MINI, rlhf_spec

pytestmark = pytest.mark.slow
SIZES = {**MINI, "sft": {"steps": 12}}


@pytest.fixture(scope="module")
def cluster():
    with two_node_cluster() as c:
        yield c


def alignpipe(env, *args):
    return subprocess.run([sys.executable, "-m", "alignpipe", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env={**env, "OMP_NUM_THREADS": "1"})


def write(path, spec):
    path.write_text(yaml.safe_dump(spec))
    return path


def loss_curve(ws, run_id):
    with sqlite3.connect(ws / ".alignpipe" / "journal.db") as db:
        return dict(db.execute("SELECT step, value FROM metrics WHERE run_id=? AND stage='sft' AND name='loss'",
                               (run_id,)).fetchall())


def last_json(r):
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.splitlines()[-1])


def test_two_node_ddp_sft_one_rank_per_node(cluster, tmp_path):
    address, env = cluster
    ws = tmp_path / "ws"
    spec = rlhf_spec(ws, SIZES)
    for st in spec["stages"].values():
        st["resources"] = {"cpus": 1}
    local = last_json(alignpipe(env, "run", write(tmp_path / "one.yaml", spec), "--until", "sft", "--json"))
    spec["stages"]["sft"]["resources"] = {"cpus": 1, "nodes": 2}
    ray = last_json(alignpipe(env, "run", write(tmp_path / "two.yaml", spec), "--only", "sft", "--force", "sft",
                              "--executor", "ray", "--ray-address", address, "--json"))
    log = next((ws / "logs" / ray["run_id"]).glob("sft-*.log")).read_text()
    nodes = re.findall(r"\[launch\] rank (\d) on node (\w+)", log)
    assert [r for r, _ in nodes] == ["0", "1"] and nodes[0][1] != nodes[1][1], log
    one, two = loss_curve(ws, local["run_id"]), loss_curve(ws, ray["run_id"])
    assert len(one) == 12 and max(abs(one[s] - two[s]) for s in one) < 1e-5
    art = Store(ws).get(ray["stages"]["sft"]["outputs"]["model"])
    assert art.manifest["summary"]["world_size"] == 2


def test_a_failing_rank_under_ray_stops_the_other(cluster, tmp_path):
    address, env = cluster
    trace = tmp_path / "trace.jsonl"
    spec = {"name": "f", "workspace": str(tmp_path / "ws"), "stages": {"f": {
        "uses": "rankstages:one_fails", "params": {"trace": str(trace), "bad": 1, "how": "crash"},
        "resources": {"cpus": 1, "nodes": 2}}}}
    r = alignpipe({**env, "PYTHONPATH": os.environ["PYTHONPATH"]}, "run", write(tmp_path / "f.yaml", spec),
                  "--executor", "ray", "--ray-address", address, "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout.splitlines()[-1])["stages"]["f"]["state"] == "failed"
    assert_dies(*[json.loads(line)["pid"] for line in trace.read_text().splitlines()])


def test_nodes_beyond_the_cluster_are_refused(cluster, tmp_path):
    address, env = cluster
    spec = {"name": "n", "workspace": str(tmp_path / "ws"), "stages": {"f": {
        "uses": "rankstages:ranks", "params": {"trace": str(tmp_path / "t"), "seconds": 0},
        "resources": {"cpus": 1, "nodes": 3}}}}
    r = alignpipe({**env, "PYTHONPATH": os.environ["PYTHONPATH"]}, "run", write(tmp_path / "n.yaml", spec),
                  "--executor", "ray", "--ray-address", address)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "stages.f.resources.nodes: asks for 3 nodes but the cluster has 2" in r.stderr
