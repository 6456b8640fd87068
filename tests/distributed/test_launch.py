"""The local launcher: a stage of several processes runs as ranks with the torchrun environment, takes the slots of
all of them, publishes once (rank 0), and fails as a whole when any rank dies — its other ranks are stopped."""

import json

from engine_util_shim import assert_dies

from alignpipe import api
from alignpipe.pipeline.runner import Runner, RunOptions
from alignpipe.pipeline.spec import Machine
from alignpipe.pipeline.store import Store


def traces(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def run(tmp_path, stages, machine=None):
    """Run `stages` in-process with the local executor (on `machine`'s slots, default this machine's)."""
    spec = {"name": "ranks", "workspace": str(tmp_path / "ws"), "stages": stages}
    return Runner(api.from_dict(spec, base_dir=tmp_path), RunOptions(), machine=machine).run()


def test_ranks_get_the_torchrun_environment_and_rank_0_publishes(tmp_path):
    trace = tmp_path / "trace.jsonl"
    res = run(tmp_path, {"r": {"uses": "rankstages:ranks", "params": {"trace": str(trace), "seconds": 0.2},
                               "resources": {"procs_per_node": 2, "cpus": 1}}})
    assert res.status == "done"
    by_rank = {t["rank"]: t for t in traces(trace)}
    assert sorted(by_rank) == [0, 1]
    for r, t in by_rank.items():
        env = t["env"]
        assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"], env["MASTER_ADDR"]) == (str(r), "2", str(r),
                                                                                           "127.0.0.1")
        assert env["OMP_NUM_THREADS"] == "1"  # each rank gets its own cpus: 1 thread
    assert by_rank[0]["env"]["MASTER_PORT"] == by_rank[1]["env"]["MASTER_PORT"]
    art = Store(tmp_path / "ws").get(res.stages["r"].outputs["out"])
    assert (art.path / "ranks.txt").read_text() == "2"
    assert art.manifest["summary"]["world_size"] == 2


def test_a_stage_of_two_processes_takes_two_cpu_slots(tmp_path):
    trace = tmp_path / "trace.jsonl"
    stages = {"r": {"uses": "rankstages:ranks", "params": {"trace": str(trace), "seconds": 1.0},
                    "resources": {"procs_per_node": 2, "cpus": 1}},
              "s": {"uses": "rankstages:single", "params": {"trace": str(trace), "seconds": 1.0},
                    "resources": {"cpus": 1}}}
    res = run(tmp_path, stages, machine=Machine(cpus=2, gpus=0, memory=None))
    assert res.status == "done"
    spans = {t["stage"]: (t["start"], t["end"]) for t in traces(trace) if t["rank"] == 0}
    (a0, a1), (b0, b1) = spans["r"], spans["s"]
    assert a1 <= b0 or b1 <= a0, "2 + 1 CPU slots on a 2-CPU machine: the stages must not overlap"


def test_a_crashed_rank_fails_the_stage_and_stops_the_others(tmp_path):
    trace = tmp_path / "trace.jsonl"
    res = run(tmp_path, {"f": {"uses": "rankstages:one_fails", "retries": 1,
                               "params": {"trace": str(trace), "bad": 1, "how": "crash"},
                               "resources": {"procs_per_node": 2, "cpus": 1}}})
    assert res.status == "failed" and res.stages["f"].attempts == 2  # a crash is retried
    assert "rank 1 exited with code 1; stopping the other ranks" in res.stages["f"].error
    assert_dies(*[t["pid"] for t in traces(trace)])


def test_a_rank_refusing_bad_input_fails_the_stage_without_retry(tmp_path):
    trace = tmp_path / "trace.jsonl"
    res = run(tmp_path, {"f": {"uses": "rankstages:one_fails", "retries": 2,
                               "params": {"trace": str(trace), "bad": 0, "how": "bad_input"},
                               "resources": {"procs_per_node": 2, "cpus": 1}}})
    assert res.status == "failed" and res.stages["f"].attempts == 1
    assert "rank says: bad input" in res.stages["f"].error and "rank 0 exited with code 2" in res.stages["f"].error
