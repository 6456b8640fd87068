"""The engine end to end with the real subprocess executor and the small stages in teststages.py."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from engine_util import assert_dies, chain, cli, executed, rec, run

from alignpipe import api
from alignpipe.pipeline.journal import Journal
from alignpipe.pipeline.runner import Runner, RunOptions
from alignpipe.pipeline.spec import Machine
from alignpipe.pipeline.store import Store


def test_cache_hit_miss_matrix(tmp_path):
    res, states = run(tmp_path, chain(tmp_path))
    assert res.status == "done" and executed(tmp_path) == ["a", "b", "c", "d"]
    res, states = run(tmp_path, chain(tmp_path))
    assert executed(tmp_path) == [] and set(states.values()) == {"cached"}, "a cached stage's code must not run"

    # one param changed: that stage and its descendants, nothing else
    run(tmp_path, chain(tmp_path, b={"params": {"marker": str(tmp_path / "marker"), "value": 20}}))
    assert executed(tmp_path) == ["b", "c"]
    # resources, retries and timeout are not part of the key
    run(tmp_path, chain(tmp_path, b={"params": {"marker": str(tmp_path / "marker"), "value": 20}},
                        a={"resources": {"cpus": 2}, "retries": 3, "timeout": 60}))
    assert executed(tmp_path) == []
    # cache: false always executes
    run(tmp_path, chain(tmp_path, d={"cache": False}))
    assert "d" in executed(tmp_path)
    # the pipeline seed reaches every stage
    spec = chain(tmp_path)
    spec["seed"] = 1
    run(tmp_path, spec)
    assert executed(tmp_path) == ["a", "b", "c", "d"]


def test_force_reruns_a_stage_and_identical_output_keeps_descendants_cached(tmp_path):
    run(tmp_path, chain(tmp_path))
    executed(tmp_path)
    _, states = run(tmp_path, chain(tmp_path), force=("a",))
    assert executed(tmp_path) == ["a"] and states["b"] == "cached"


def test_from_until_only(tmp_path):
    _, states = run(tmp_path, chain(tmp_path), until="b")
    assert executed(tmp_path) == ["a", "b"] and set(states) == {"a", "b"}
    _, states = run(tmp_path, chain(tmp_path), only="c")
    assert executed(tmp_path) == ["c"] and set(states) == {"a", "b", "c"} and states["b"] == "cached"
    _, states = run(tmp_path, chain(tmp_path), from_="b")
    assert executed(tmp_path) == ["b", "c", "d"] and states["a"] == "cached"


def test_only_refuses_when_inputs_are_not_cached(tmp_path):
    from alignpipe.pipeline.errors import UserError

    with pytest.raises(UserError, match="stage 'a' has no cached output.*run without --only first"):
        run(tmp_path, chain(tmp_path), only="b")
    assert executed(tmp_path) == []


def test_moving_the_workspace_keeps_the_cache(tmp_path):
    run(tmp_path, chain(tmp_path))
    executed(tmp_path)
    os.rename(tmp_path / "ws", tmp_path / "moved")
    _, states = run(tmp_path, chain(tmp_path), workspace=tmp_path / "moved")
    assert executed(tmp_path) == [] and set(states.values()) == {"cached"}


def test_retries_fail_twice_then_succeed(tmp_path):
    spec = {"name": "f", "workspace": str(tmp_path / "ws"), "stages": {"f": {
        "uses": "teststages:flaky", "params": {"counter": str(tmp_path / "n"), "fail_times": 2}, "retries": 2}}}
    res, states = run(tmp_path, spec)
    assert states == {"f": "done"} and res.stages["f"].attempts == 3
    j = Journal(tmp_path / "ws")
    assert [a.status for a in j.attempts(res.run_id, "f")] == ["failed", "failed", "done"]
    assert "planned failure 1" in j.attempts(res.run_id, "f")[0].error


def test_the_runner_sleeps_through_a_retry_backoff(tmp_path):
    import resource

    spec = {"name": "f", "workspace": str(tmp_path / "ws"), "stages": {"f": {
        "uses": "teststages:flaky", "params": {"counter": str(tmp_path / "n"), "fail_times": 1}, "retries": 1}}}
    pipe = api.from_dict(spec, base_dir=tmp_path)
    cpu0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    res = Runner(pipe, RunOptions(retry_base_delay=1.5)).run()
    cpu1, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - t0
    assert res.stages["f"].state == "done" and res.stages["f"].attempts == 2 and wall >= 1.5
    busy = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)  # measured: 0.015 s; spinning 0.4
    assert busy < 0.15, f"the runner used {busy:.2f} CPU-s over {wall:.1f} s, 1.5 s of it a backoff"


def test_retries_exhausted_keeps_exit_code_and_log_tail(tmp_path):
    spec = {"name": "f", "workspace": str(tmp_path / "ws"), "stages": {
        "f": {"uses": "teststages:flaky", "params": {"counter": str(tmp_path / "n"), "fail_times": 5}, "retries": 1},
        "after": rec(tmp_path / "marker", 1, inputs={"x": "f.out"})}}
    res, states = run(tmp_path, spec)
    assert res.status == "failed" and res.exit_code == 1
    assert states == {"f": "failed", "after": "skipped"} and res.stages["f"].attempts == 2
    att = Journal(tmp_path / "ws").attempts(res.run_id, "f")[-1]
    assert att.exit_code == 1 and "RuntimeError: planned failure 2" in att.error


def test_bad_data_error_is_not_retried(tmp_path):
    spec = {"name": "b", "workspace": str(tmp_path / "ws"),
            "stages": {"b": {"uses": "teststages:bad_data", "retries": 3}}}
    res, _ = run(tmp_path, spec)
    assert res.stages["b"].attempts == 1
    assert "field 'prompt' is empty" in res.stages["b"].error and "Traceback" not in res.stages["b"].error


def test_crash_fails_the_stage_not_the_runner(tmp_path):
    spec = {"name": "c", "workspace": str(tmp_path / "ws"),
            "stages": {"boom": {"uses": "teststages:die", "params": {"code": 137}}, "ok": rec(tmp_path / "m", 1)}}
    res, states = run(tmp_path, spec)
    assert states == {"boom": "failed", "ok": "done"}
    assert res.stages["boom"].error.startswith("exited with code 137")


def test_timeout_kills_the_whole_process_group(tmp_path):
    pids = tmp_path / "pids.json"
    spec = {"name": "t", "workspace": str(tmp_path / "ws"),
            "stages": {"h": {"uses": "teststages:hang", "params": {"pids": str(pids)}, "timeout": 1.5}}}
    t0 = time.time()
    res, states = run(tmp_path, spec)
    assert states == {"h": "failed"} and time.time() - t0 < 20
    assert res.stages["h"].error.startswith("timed out after 1.5s")
    assert_dies(*json.loads(pids.read_text()), timeout=5)


def test_independent_stages_overlap_within_cpu_slots(tmp_path):
    def spans(cpus):
        spec = {"name": "o", "workspace": str(tmp_path / f"ws{cpus}"), "stages": {
            n: {"uses": "teststages:sleepy", "params": {"seconds": 1.5}, "resources": {"cpus": cpus}}
            for n in ("x", "y")}}
        pipe = api.from_dict(spec, base_dir=tmp_path)
        res = Runner(pipe, RunOptions(), machine=Machine(cpus=2, gpus=0, memory=None)).run()
        store = Store(res.workspace)
        return [json.loads((store.get(res.stages[n].outputs["out"]).path / "span.json").read_text())
                for n in ("x", "y")]

    x, y = spans(1)
    assert x["start"] < y["end"] and y["start"] < x["end"], "two 1-CPU stages on 2 CPUs must run together"
    x, y = spans(2)
    assert x["end"] <= y["start"] or y["end"] <= x["start"], "two 2-CPU stages on 2 CPUs must not overlap"


def test_declared_memory_is_a_slot_too(tmp_path):
    spec = {"name": "o", "workspace": str(tmp_path / "ws"), "stages": {
        n: {"uses": "teststages:sleepy", "params": {"seconds": 1.0}, "resources": {"cpus": 1, "memory": "3GB"}}
        for n in ("x", "y")}}
    pipe = api.from_dict(spec, base_dir=tmp_path)
    res = Runner(pipe, RunOptions(), machine=Machine(cpus=2, gpus=0, memory=5 * 1024**3)).run()
    store = Store(res.workspace)
    x, y = (json.loads((store.get(res.stages[n].outputs["out"]).path / "span.json").read_text()) for n in "xy")
    assert x["end"] <= y["start"] or y["end"] <= x["start"], "2 x 3GB stages must not share a 5GB machine"


def _flip_first_byte(f, keep_mtime=False):
    st = f.stat()
    f.write_bytes(bytes([f.read_bytes()[0] ^ 1]) + f.read_bytes()[1:])
    if keep_mtime:  # bit rot: the content changes, the file's metadata does not
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_flipped_byte_in_a_cached_artifact_is_found_quarantined_and_recomputed(tmp_path):
    res, _ = run(tmp_path, chain(tmp_path))
    executed(tmp_path)
    ws = tmp_path / "ws"
    a_id = res.stages["a"].outputs["out"]
    _flip_first_byte(Store(ws).artifacts_dir / a_id / "value.txt")
    r = cli("verify", "-w", ws)
    assert r.returncode == 1 and f"corrupt {a_id[:12]}: value.txt: content changed" in r.stdout
    events = []
    res, states = run(tmp_path, chain(tmp_path), report=events.append)
    assert states == {"a": "done", "b": "cached", "c": "cached", "d": "cached"} and executed(tmp_path) == ["a"]
    assert res.stages["a"].outputs["out"] == a_id  # the same content again, in place of the corrupt copy
    warning = next(e["message"] for e in events if e["event"] == "warning")
    assert f"cached artifact {a_id[:12]} is corrupt (value.txt: content changed" in warning
    (quarantined,) = (ws / "quarantine").iterdir()
    assert quarantined.name.startswith(a_id) and "sha256 mismatch" in (quarantined / "QUARANTINED.txt").read_text()
    assert cli("verify", "-w", ws).returncode == 0


def test_bit_rot_that_keeps_mtimes_is_refused_by_the_consumer_and_caught_by_verify_always(tmp_path):
    res, _ = run(tmp_path, chain(tmp_path))
    a_id = res.stages["a"].outputs["out"]
    _flip_first_byte(Store(tmp_path / "ws").artifacts_dir / a_id / "value.txt", keep_mtime=True)
    res, states = run(tmp_path, chain(tmp_path), force=("b",))  # the cache hit's stat check cannot see it
    assert states["a"] == "cached" and states["b"] == "failed" and states["c"] == "skipped"
    assert f"refuses input 'x': artifact {a_id[:12]} is corrupt" in res.stages["b"].error
    executed(tmp_path)
    res, states = run(tmp_path, chain(tmp_path), verify="always")  # re-hash every cache hit
    assert states == {"a": "done", "b": "cached", "c": "cached", "d": "cached"} and executed(tmp_path) == ["a"]


def test_metrics_and_progress_reach_the_journal(tmp_path):
    spec = {"name": "m", "workspace": str(tmp_path / "ws"), "stages": {"n": {
        "uses": "teststages:counter", "params": {"trace": str(tmp_path / "t"), "steps": 4, "step_s": 0.0}}}}
    events = []
    res = api.run(api.from_dict(spec, base_dir=tmp_path), report=events.append)
    series = Journal(tmp_path / "ws").metrics(res.stages["n"].fingerprint)["loss"]
    assert series == [(0, 1.0), (1, 0.5), (2, 1 / 3), (3, 0.25)]
    assert {"event": "progress", "stage": "n", "done": 4, "total": 4, "desc": ""} in events


# -- processes killed from outside -------------------------------------------------------------------------------

def _counter_pipeline(write_pipeline, tmp_path, steps=40):
    return write_pipeline({"name": "k", "workspace": str(tmp_path / "ws"), "stages": {
        "n": {"uses": "teststages:counter",
              "params": {"trace": str(tmp_path / "trace"), "steps": steps, "step_s": 0.1}},
        "after": rec(tmp_path / "marker", 1, inputs={"x": "n.out"})}})


def _start_runner(pipeline):
    return subprocess.Popen([sys.executable, "-m", "alignpipe", "run", str(pipeline), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_steps(trace, n, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if trace.exists() and trace.read_text().count("step") >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"stage did not reach {n} steps")


def _steps(trace):
    return [line for line in trace.read_text().splitlines()]


def test_kill_9_of_the_runner_then_rerun_resumes_from_checkpoint(write_pipeline, tmp_path):
    pipeline = _counter_pipeline(write_pipeline, tmp_path)
    proc = _start_runner(pipeline)
    _wait_for_steps(tmp_path / "trace", 8, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert_dies(int((tmp_path / "trace.pid").read_text()))  # PR_SET_PDEATHSIG: the stage dies with the runner
    lines_after_kill = _steps(tmp_path / "trace")
    store = Store(tmp_path / "ws")
    assert store.ids() == [], "no partial artifact may look complete"

    r = cli("run", pipeline, "--quiet")
    assert r.returncode == 0, r.stderr
    lines = _steps(tmp_path / "trace")[len(lines_after_kill):]
    resumed_at = int(lines[0].split()[1])
    assert resumed_at >= 7, f"must resume from the newest checkpoint, not from scratch: {lines[0]}"
    first_run_steps = [int(x.split()[1]) for x in lines_after_kill if x.startswith("step")]
    assert sorted(set(first_run_steps)) == list(range(max(first_run_steps) + 1))
    assert [int(x.split()[1]) for x in lines[1:]] == list(range(resumed_at, 40))
    n_arts = [a for a in store.all() if a.producer["stage"] == "n"]
    assert len(n_arts) == 1 and (n_arts[0].path / "count.txt").read_text() == "40"
    # the same artifact an uninterrupted run produces
    clean = tmp_path / "clean"
    clean.mkdir()
    def write_clean(d):
        (clean / "p.yaml").write_text(json.dumps(d))
        return clean / "p.yaml"

    clean_pipeline = _counter_pipeline(write_clean, clean, steps=40)
    assert cli("run", clean_pipeline, "--quiet").returncode == 0
    assert Store(clean / "ws").ids().count(n_arts[0].id) == 1
    runs = Journal(tmp_path / "ws").runs()
    assert [r["status"] for r in runs] == ["done", "running"] or [r["status"] for r in runs] == ["done", "abandoned"]


def test_ctrl_c_stops_stages_records_state_and_rerun_resumes(write_pipeline, tmp_path):
    pipeline = _counter_pipeline(write_pipeline, tmp_path)
    proc = _start_runner(pipeline)
    _wait_for_steps(tmp_path / "trace", 5, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    j = Journal(tmp_path / "ws")
    run = j.runs()[0]
    assert run["status"] == "interrupted"
    assert [a.status for a in j.attempts(run["id"], "n")] == ["interrupted"]
    r = cli("run", pipeline, "--quiet")
    assert r.returncode == 0
    assert _steps(tmp_path / "trace")[-1] == "step 39"
    resumed = [line for line in _steps(tmp_path / "trace") if line.startswith("start")]
    assert resumed[0] == "start 0" and int(resumed[1].split()[1]) >= 4


def test_two_concurrent_runs_on_one_workspace(write_pipeline, tmp_path):
    pipeline = _counter_pipeline(write_pipeline, tmp_path, steps=20)
    first = _start_runner(pipeline)
    _wait_for_steps(tmp_path / "trace", 2, first)
    second = cli("run", pipeline, "--quiet")
    assert second.returncode == 2 and "--wait" in second.stderr
    assert re.search(rf"workspace is in use by run \d{{8}}-\d{{6}}-\w+ \(pid {first.pid} on ", second.stderr)
    waiting = cli("run", pipeline, "--quiet", "--wait", timeout=120)
    assert first.wait(timeout=60) == 0
    assert waiting.returncode == 0
    db = sqlite3.connect(tmp_path / "ws" / ".alignpipe" / "journal.db")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    statuses = [r[0] for r in db.execute("SELECT status FROM attempts WHERE stage='n' ORDER BY started")]
    assert statuses == ["running", "done", "cached"] or statuses == ["done", "cached"]
    assert [line for line in _steps(tmp_path / "trace") if line.startswith("start")] == ["start 0"]


def test_gpus_are_pinned_per_stage_with_cuda_visible_devices(tmp_path, monkeypatch):
    from alignpipe.pipeline.spec import pipeline_from_dict

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)  # the stage process chooses (test_cpu.py covers how)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    machine = Machine(cpus=2, gpus=2, memory=None)
    probe = {"uses": "teststages:env_probe", "params": {"seconds": 1.0}}
    spec = {"name": "g", "workspace": str(tmp_path / "ws"), "stages": {
        "one": {**probe, "resources": {"gpus": 1, "cpus": 1}}, "two": {**probe, "resources": {"gpus": 1, "cpus": 1}},
        "cpu": {**probe, "params": {"seconds": 0.0}, "resources": {"cpus": 2}}}}
    pipe = pipeline_from_dict(spec, base_dir=tmp_path, machine=machine)
    res = Runner(pipe, RunOptions(), machine=machine).run()
    store = Store(res.workspace)
    env = {n: json.loads((store.get(s.outputs["out"]).path / "env.json").read_text()) for n, s in res.stages.items()}
    assert sorted([env["one"]["CUDA_VISIBLE_DEVICES"], env["two"]["CUDA_VISIBLE_DEVICES"]]) == ["0", "1"]
    assert env["cpu"]["CUDA_VISIBLE_DEVICES"] == "" and env["cpu"]["OMP_NUM_THREADS"] == "2"
    assert env["one"]["OMP_NUM_THREADS"] == "1" and env["one"]["OMP_WAIT_POLICY"] is None  # no pool to wait on
    assert (env["cpu"]["OMP_WAIT_POLICY"], env["cpu"]["GOMP_SPINCOUNT"]) in (("PASSIVE", None), (None, "1000"))


def test_fsspec_inputs_are_materialized_and_cached_by_content(tmp_path):
    """A real fsspec backend (the in-process memory filesystem): fetched once, refetched when it changes."""
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/corpora/c1/corpus.txt", b"a b c\nd e\n")
    m = tmp_path / "marker"
    spec = {"name": "r", "workspace": str(tmp_path / "ws"), "stages": {
        "count": {"uses": "example.count", "inputs": {"text": "memory://corpora/c1"}},
        "after": rec(m, 1, inputs={"x": "count.out"})}}
    res, states = run(tmp_path, spec)
    assert states == {"count": "done", "after": "done"}
    manifest = Store(res.workspace).get(res.stages["count"].outputs["out"]).manifest
    assert manifest["inputs"]["text"]["external"] == "memory://corpora/c1" and manifest["summary"]["total"] == 5
    _, states = run(tmp_path, spec)
    assert states["count"] == "cached"
    fs.pipe("/corpora/c1/corpus.txt", b"a b c\nd e f\n")
    res, states = run(tmp_path, spec)
    assert states["count"] == "done"
    assert Store(res.workspace).get(res.stages["count"].outputs["out"]).manifest["summary"]["total"] == 6


def test_unreachable_hub_input_is_a_clean_error(tmp_path, monkeypatch):
    from alignpipe.pipeline.errors import UserError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = {"name": "h", "workspace": str(tmp_path / "ws"),
            "stages": {"count": {"uses": "example.count", "inputs": {"text": "hf:nobody/no-such-model"}}}}
    with pytest.raises(UserError, match=r"input 'hf:nobody/no-such-model': cannot fetch .* pass the local directory"):
        run(tmp_path, spec)
