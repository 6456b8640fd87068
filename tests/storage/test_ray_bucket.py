"""The Ray executor with a workspace in a bucket and no disk shared with the nodes: a two-node local Ray cluster
(two `ray start` processes, each node with its own ALIGNPIPE_CACHE: its own artifact cache and work dirs) runs
the example pipeline and the shortened RLHF pipeline to the artifacts of a local run; stages' events and logs reach
the runner through Ray."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from alignpipe import api
from alignpipe.pipeline.journal import Journal

RAY = str(Path(sys.executable).with_name("ray"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_nodes(s3, tmp_path):
    """A head and a worker node, one CPU each, each with its own cache; stopped (only these) afterwards."""
    port = _free_port()
    tag = f"alignpipe-test-{uuid.uuid4().hex[:8]}"
    # a local test cluster: no token authentication (Ray 2.60 turns it on when ~/.ray/auth_token exists)
    base = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    nodes = {"head": tmp_path / "node-head", "worker": tmp_path / "node-worker"}
    head = [RAY, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
            f"--temp-dir=/tmp/{tag}", "--node-ip-address=127.0.0.1"]
    worker = [RAY, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1", "--node-ip-address=127.0.0.1"]
    for cmd, cache in ((head, nodes["head"]), (worker, nodes["worker"])):
        subprocess.run(cmd, env={**base, "ALIGNPIPE_CACHE": str(cache)}, check=True, capture_output=True,
                       timeout=120)
    try:
        yield f"127.0.0.1:{port}", nodes
    finally:
        subprocess.run(["pkill", "-f", f"127.0.0.1:{port}"], capture_output=True)  # this cluster's processes only
        subprocess.run(["pkill", "-f", tag], capture_output=True)
        time.sleep(1)


def test_two_nodes_without_a_shared_disk_run_the_example_to_the_local_ids(two_nodes, s3, tmp_path):
    address, nodes = two_nodes
    local = api.run(api.from_dict(api.load(None, builtin="example").spec.model_dump(exclude_unset=True)),
                    workspace=str(tmp_path / "local"))
    env = {**os.environ, "ALIGNPIPE_CACHE": str(tmp_path / "driver"), "RAY_AUTH_MODE": "disabled"}
    r = subprocess.run([sys.executable, "-m", "alignpipe", "run", "--example", "--executor", "ray", "--ray-address",
                        address, "-w", s3 + "/ws", "--json"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    import json

    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert {n: s["outputs"] for n, s in result["stages"].items()} == {n: s.outputs for n, s in local.stages.items()}
    ran_on = {name for name, cache in nodes.items() if any(cache.glob("workspaces/*/work/*"))}
    assert ran_on == {"head", "worker"}  # both nodes ran stages, each in its own cache
    assert not any((tmp_path / "driver").glob("workspaces/*/work/*/ckpt"))  # no stage ran where the runner is
    os.environ["ALIGNPIPE_CACHE"] = str(tmp_path / "driver")
    journal = Journal(s3 + "/ws", readonly=True)
    words = journal.last_attempt("words", executed=True)
    assert journal.metrics(words.fingerprint)["distinct"]  # the stage's events came back through the relay
    assert "[words] 3200 words in 400 lines" in Path(words.log).read_text()  # and its log


def _write(path: Path, spec: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(spec))
    return path


def _one_cpu(spec: dict) -> dict:
    """Every stage on 1 CPU, what a node of the test cluster has. A stage's CPUs are its thread count, which decides
    the order of float sums: the runs compared use the same."""
    for stage in spec["stages"].values():
        stage["resources"] = {**(stage.get("resources") or {}), "cpus": 1}
    return spec


def _ray_run(address: str, args: list[str], ws: str, driver: Path, expect: int = 0) -> Any:
    """`alignpipe run ARGS --executor ray` on the cluster: its JSON result, or (expect=2) its error output."""
    import json

    env = {**os.environ, "ALIGNPIPE_CACHE": str(driver), "RAY_AUTH_MODE": "disabled"}
    r = subprocess.run([sys.executable, "-m", "alignpipe", "run", *args, "--executor", "ray", "--ray-address",
                        address, "-w", ws, "--json"], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == expect, r.stdout[-3000:] + r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1]) if expect == 0 else r.stderr


@pytest.mark.slow
def test_the_shortened_rlhf_pipeline_on_two_nodes_and_a_bucket_equals_a_local_run(two_nodes, s3, tmp_path):

    from pipelines import MINI, rlhf_spec

    address, _ = two_nodes
    spec = tmp_path / "rlhf.yaml"
    refused = _ray_run(address, [str(_write(spec, rlhf_spec(s3 + "/rlhf", MINI)))], s3 + "/rlhf", tmp_path / "d",
                       expect=2)
    assert "base.resources.cpus: asks for 2 CPUs but the cluster's largest node has 1" in refused
    local = api.run(api.from_dict(_one_cpu(rlhf_spec(tmp_path / "local", MINI))))
    result = _ray_run(address, [str(_write(spec, _one_cpu(rlhf_spec(s3 + "/rlhf", MINI))))], s3 + "/rlhf",
                      tmp_path / "d")
    assert {n: s["outputs"] for n, s in result["stages"].items()} == {n: s.outputs for n, s in local.stages.items()}
    again = api.run(api.from_dict(_one_cpu(rlhf_spec(s3 + "/rlhf", MINI))))  # the local executor, its own cache
    assert {s.state for s in again.stages.values()} == {"cached"}
