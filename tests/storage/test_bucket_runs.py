"""Pipelines on a workspace in a bucket (a real S3-compatible server): the same artifact ids as a local workspace,
cache hits, corruption caught, a kill during an upload leaving nothing that looks published, a stage killed on
one machine resumed on another from the checkpoint in the bucket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from bucket_util import machine

from alignpipe import api
from alignpipe.pipeline.fs import open_fs
from alignpipe.pipeline.store import MANIFEST, Store


def example(ws, **stages):
    spec = {"name": "example", "seed": 0, "workspace": str(ws), "stages": {
        "corpus": {"uses": "example.corpus", "params": {"lines": 200}},
        "words": {"uses": "example.count", "inputs": {"text": "corpus.out"}, "params": {"unit": "words"}},
        "chars": {"uses": "example.count", "inputs": {"text": "corpus.out"}, "params": {"unit": "chars"}},
        "report": {"uses": "example.report", "inputs": {"words": "words.out", "chars": "chars.out"}}}}
    spec["stages"].update(stages)
    return spec


def outputs(result):
    return {n: s.outputs for n, s in result.stages.items()}


def run(spec, **kw):
    return api.run(api.from_dict(spec), **kw)


def test_the_example_on_a_bucket_equals_a_local_run_and_reruns_cached(s3, tmp_path):
    local = run(example(tmp_path / "local"))
    remote = run(example(s3 + "/ws"))
    assert remote.status == "done" and outputs(remote) == outputs(local)
    again = run(example(s3 + "/ws"))
    assert {s.state for s in again.stages.values()} == {"cached"}
    store = Store(s3 + "/ws")
    assert sorted(store.ids()) == sorted({i for o in outputs(local).values() for i in o.values()})
    assert all(store.verify(i) == [] for i in store.ids())  # full: downloads and re-hashes
    fs = open_fs(s3 + "/ws")
    assert fs.listdir("") == ["alignpipe-workspace.json", "artifacts", "logs", "refs"]  # (reports: by the CLI)
    assert any(k.endswith("/words-1.log") for k in fs.find("logs"))  # stage logs mirrored


def test_the_cli_run_keeps_its_cache_where_told_and_leaves_the_report_in_the_bucket(s3, tmp_path):
    cache = tmp_path / "elsewhere"
    env = {k: v for k, v in os.environ.items() if k != "ALIGNPIPE_CACHE"}
    done = subprocess.run([sys.executable, "-m", "alignpipe", "run", "--example", "-w", s3 + "/ws", "--cache",
                           str(cache), "-q"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ids = Store(s3 + "/ws").ids()
    assert ids and all((cache / "artifacts" / f"{i}.complete").exists() for i in ids)  # outputs kept there
    assert "words example.count" in open_fs(s3 + "/ws").read_bytes("report.html").decode()  # for all to open


def test_a_byte_changed_in_the_bucket_is_caught_quarantined_and_recomputed(s3):
    first = run(example(s3 + "/ws"))
    art = first.stages["words"].outputs["out"]
    fs = open_fs(s3 + "/ws")
    (name,) = [k for k in fs.find(f"artifacts/{art}") if k != MANIFEST]
    data = bytearray(fs.read_bytes(f"artifacts/{art}/{name}"))
    data[0] ^= 1
    time.sleep(1.1)  # S3 keeps modification times in whole seconds
    fs.write_bytes(f"artifacts/{art}/{name}", bytes(data))  # same size: only its modification time gives it away
    events = []
    again = run(example(s3 + "/ws"), report=events.append)
    assert again.stages["words"].state == "done" and again.stages["words"].outputs == first.stages["words"].outputs
    warning = next(e["message"] for e in events if e["event"] == "warning")
    assert f"cached artifact {art[:12]} is corrupt ({name}: content changed" in warning and "quarantine" in warning
    assert Store(s3 + "/ws").verify(art) == []


def test_kill_9_during_an_upload_leaves_no_artifact_that_looks_published(s3, tmp_path):
    spec = example(s3 + "/ws", big={"uses": "teststages:bulky", "params": {"files": 6, "mb": 8, "seed": 1}})
    reference = run(example(tmp_path / "ref", big=spec["stages"]["big"]))
    fs = open_fs(s3 + "/ws")
    yml = tmp_path / "p.yaml"
    yml.write_text(yaml.safe_dump(spec))
    proc = subprocess.Popen([sys.executable, "-m", "alignpipe", "run", str(yml), "-q"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "ALIGNPIPE_LEASE_TTL": "2"})
    big = reference.stages["big"].outputs["out"]
    deadline = time.time() + 120
    while not any(k.startswith(f"{big}/part-") for k in fs.find("artifacts")):  # the upload has begun
        assert proc.poll() is None and time.time() < deadline, "the upload never started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    store = Store(s3 + "/ws")
    assert not store.has(big) and big not in store.ids()  # parts without a manifest: no artifact for any reader
    again = run(spec, wait=True)  # the dead runner's lease expires after its 2 s
    assert outputs(again) == outputs(reference)
    assert store.verify(big) == []


def test_a_stage_killed_on_one_machine_resumes_on_another_from_the_bucket(s3, tmp_path):
    trace = tmp_path / "trace"
    spec = {"name": "c", "workspace": s3 + "/ws", "stages": {"n": {
        "uses": "teststages:counter", "params": {"trace": str(trace), "steps": 6, "step_s": 0.4}}}}
    yml = tmp_path / "c.yaml"
    yml.write_text(yaml.safe_dump(spec))
    a = subprocess.Popen([sys.executable, "-m", "alignpipe", "run", str(yml), "-q"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env={**machine(tmp_path, "a"), "ALIGNPIPE_LEASE_TTL": "2"})
    fs = open_fs(s3 + "/ws")
    deadline = time.time() + 60
    while not any(k.endswith("step-000000002/.complete") for k in fs.find("work")):  # 2 steps in the bucket
        assert a.poll() is None and time.time() < deadline
        time.sleep(0.05)
    a.send_signal(signal.SIGKILL)
    a.wait()
    b = subprocess.run([sys.executable, "-m", "alignpipe", "run", str(yml), "--wait"], env=machine(tmp_path, "b"),
                       capture_output=True, text=True, timeout=120)
    assert b.returncode == 0, b.stdout + b.stderr
    starts = [line for line in trace.read_text().splitlines() if line.startswith("start")]
    assert starts[0] == "start 0" and int(starts[-1].split()[1]) >= 2  # machine b began where a's bucket copy was
    reference = run({**spec, "workspace": str(tmp_path / "ref"), "stages": {"n": {
        "uses": "teststages:counter", "params": {"trace": str(trace), "steps": 6, "step_s": 0.4}}}})
    assert Store(s3 + "/ws").lookup(reference.stages["n"].fingerprint) == reference.stages["n"].outputs
    assert not fs.find("work")  # published: the checkpoints' copy is gone


def test_two_machines_publishing_the_same_content_end_with_one_intact_artifact(s3, tmp_path):
    code = ("import sys; from pathlib import Path; from alignpipe.pipeline.store import Store; d = Path(sys.argv[1]); "
            "d.mkdir(); [ (d / f'f{i}.bin').write_bytes(bytes([i]) * 300000) for i in range(8) ]; "
            "print(Store(sys.argv[2]).publish(d, {'kind': 'dataset', 'producer': {'stage': sys.argv[3]}}).id)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"s{i}"), s3 + "/ws", f"m{i}"],
                              env=machine(tmp_path, str(i)), stdout=subprocess.PIPE, text=True) for i in range(2)]
    ids = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert len(ids) == 1 and all(p.returncode == 0 for p in procs)
    store = Store(s3 + "/ws")
    (art,) = ids
    assert store.ids() == [art] and store.verify(art) == []
    assert store.get(art).producer["stage"] in ("m0", "m1")  # one manifest: whoever created it first


def test_a_stage_of_two_processes_on_a_bucket_publishes_once_from_rank_0(s3, tmp_path, monkeypatch):
    ranks = Path(__file__).resolve().parent.parent / "distributed"  # rankstages: torch-free multi-process stages
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ranks), os.environ["PYTHONPATH"]]))
    monkeypatch.syspath_prepend(str(ranks))
    spec = {"name": "ranks", "workspace": s3 + "/ws", "stages": {"r": {
        "uses": "rankstages:ranks", "params": {"trace": str(tmp_path / "trace"), "seconds": 0.1},
        "resources": {"procs_per_node": 2, "cpus": 1}}}}
    first = run(spec)
    assert first.status == "done"
    assert sorted(json.loads(line)["rank"] for line in (tmp_path / "trace").read_text().splitlines()) == [0, 1]
    store = Store(s3 + "/ws")
    art = first.stages["r"].outputs["out"]
    assert store.ids() == [art] and store.get(art).manifest["summary"]["world_size"] == 2 and store.verify(art) == []
    assert run(spec).stages["r"].state == "cached"
