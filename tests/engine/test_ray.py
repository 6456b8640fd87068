"""The same graph on a real (local) Ray cluster: same artifacts, retries, timeouts, interruption."""

import json

import pytest
from engine_util import assert_dies, chain, cli, executed, rec, run

from alignpipe.pipeline.executors import RayExecutor
from alignpipe.pipeline.journal import Journal
from alignpipe.pipeline.store import Store


@pytest.fixture(scope="module")
def ray_executor():
    ex = RayExecutor()  # starts a local Ray cluster for this module
    yield ex
    ex.close()


def test_ray_runs_the_graph_to_the_same_artifacts_as_local(ray_executor, tmp_path):
    assert ray_executor.machine().cpus >= 1
    res_ray, states = run(tmp_path, chain(tmp_path), executor=ray_executor)
    assert set(states.values()) == {"done"} and executed(tmp_path) == ["a", "b", "c", "d"]
    spec = chain(tmp_path)
    spec["workspace"] = str(tmp_path / "ws-local")
    res_local, _ = run(tmp_path, spec, executor=None)
    executed(tmp_path)
    assert {n: s.outputs for n, s in res_ray.stages.items()} == {n: s.outputs for n, s in res_local.stages.items()}
    _, states = run(tmp_path, chain(tmp_path), executor=ray_executor)
    assert set(states.values()) == {"cached"} and executed(tmp_path) == []


def test_ray_retries_and_records_attempts(ray_executor, tmp_path):
    spec = {"name": "f", "workspace": str(tmp_path / "ws"), "stages": {"f": {
        "uses": "teststages:flaky", "params": {"counter": str(tmp_path / "n"), "fail_times": 1}, "retries": 1}}}
    res, states = run(tmp_path, spec, executor=ray_executor)
    assert states == {"f": "done"}
    assert [a.status for a in Journal(tmp_path / "ws").attempts(res.run_id, "f")] == ["failed", "done"]


def test_ray_timeout_stops_the_stage_process_group(ray_executor, tmp_path):
    pids = tmp_path / "pids.json"
    spec = {"name": "t", "workspace": str(tmp_path / "ws"),
            "stages": {"h": {"uses": "teststages:hang", "params": {"pids": str(pids)}, "timeout": 2}}}
    res, states = run(tmp_path, spec, executor=ray_executor)
    assert states == {"h": "failed"} and res.stages["h"].error.startswith("timed out after 2s")
    assert_dies(*json.loads(pids.read_text()))


def test_ray_stage_outputs_land_in_the_shared_store(ray_executor, tmp_path):
    spec = {"name": "s", "workspace": str(tmp_path / "ws"), "stages": {"a": rec(tmp_path / "m", 5)}}
    res, _ = run(tmp_path, spec, executor=ray_executor)
    art = Store(tmp_path / "ws").get(res.stages["a"].outputs["out"])
    assert (art.path / "value.txt").read_text() == "5" and Store(tmp_path / "ws").verify(art.id) == []


def test_cli_executor_ray(tmp_path):
    r = cli("run", "--example", "--executor", "ray", "-w", tmp_path / "ws", "--json", timeout=180)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["status"] == "done"
    r = cli("run", "--example", "--executor", "nosuch", "-w", tmp_path / "ws")
    assert r.returncode == 2 and "expected 'local' or 'ray'" in r.stderr
