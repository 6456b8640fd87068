"""push/pull between a local workspace and a bucket: the whole lineage moves, verified, idempotent, with the cache
refs, so the pipeline is all cache hits on the other side; gc removes uploads a crash left without a manifest."""

from __future__ import annotations

import subprocess
import sys

from alignpipe import api
from alignpipe.pipeline import store as store_mod
from alignpipe.pipeline.fs import open_fs
from alignpipe.pipeline.store import Store


def cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "alignpipe", *map(str, args)], capture_output=True, text=True,
                          timeout=180, **kw)


def example(ws):
    return api.from_dict({"name": "example", "workspace": str(ws), "stages": {
        "corpus": {"uses": "example.corpus", "params": {"lines": 100}},
        "words": {"uses": "example.count", "inputs": {"text": "corpus.out"}},
        "report": {"uses": "example.report", "inputs": {"words": "words.out", "chars": "words.out"}}}})


def test_push_to_a_bucket_and_pull_back_into_a_fresh_workspace(s3, tmp_path):
    first = api.run(example(tmp_path / "laptop"))
    ids = {n: s.outputs["out"] for n, s in first.stages.items()}
    dry = cli("push", "report", "-w", tmp_path / "laptop", "--to", s3 + "/team", "--dry-run")
    assert dry.returncode == 0 and "would copy 3 artifacts" in dry.stdout
    assert open_fs(s3 + "/team").find("artifacts") == {}  # a dry run moves nothing
    push = cli("push", "report", "-w", tmp_path / "laptop", "--to", s3 + "/team")
    assert push.returncode == 0 and "copied 3 artifacts" in push.stdout and "3 cache refs recorded" in push.stdout
    again = cli("push", "report", "-w", tmp_path / "laptop", "--to", s3 + "/team")
    assert "copied 0 artifacts (0B) to" in again.stdout and "3 already there" in again.stdout  # idempotent
    team = Store(s3 + "/team")
    assert sorted(team.ids()) == sorted(ids.values()) and all(team.verify(i) == [] for i in ids.values())
    assert team.get(ids["report"]).manifest == Store(tmp_path / "laptop").get(ids["report"]).manifest
    rerun = api.run(example(s3 + "/team"))  # the refs came along: nothing to compute
    assert {s.state for s in rerun.stages.values()} == {"cached"}
    pull = cli("pull", ids["words"][:10], "--from", s3 + "/team", "-w", tmp_path / "desk")
    assert pull.returncode == 0 and "copied 2 artifacts" in pull.stdout, pull.stderr
    desk = api.run(example(tmp_path / "desk"))
    assert desk.stages["corpus"].state == desk.stages["words"].state == "cached"
    assert desk.stages["report"].state == "done" and desk.stages["report"].outputs["out"] == ids["report"]


def test_gc_removes_an_upload_left_without_its_manifest_once_old_enough(s3, monkeypatch):
    fs = open_fs(s3 + "/ws")
    fs.write_bytes("alignpipe-workspace.json", b"{}")
    fs.write_bytes("artifacts/" + "a" * 64 + "/weights.bin", b"half an upload")
    store = Store(s3 + "/ws")
    assert store.ids() == [] and store.gc(set(), dry_run=False, busy_work=set())["artifacts"] == []  # too recent
    monkeypatch.setattr(store_mod, "PARTIAL_GRACE_S", 0)
    assert store.gc(set(), dry_run=False, busy_work=set())["artifacts"] == ["a" * 64]
    assert fs.find("artifacts") == {}


def test_another_machine_pulls_a_stage_output_by_name_without_the_journal(s3, tmp_path):
    from bucket_util import machine

    made = api.run(example(s3 + "/team")).stages["words"].outputs["out"]
    other = machine(tmp_path, "b")  # its own cache and state: the embedded journal of the run is not there
    status = cli("status", "-w", s3 + "/team", env=other)
    assert status.returncode == 2 and "this machine has no journal of this workspace" in status.stderr
    assert "journal: postgresql://" in status.stderr
    pull = cli("pull", "words.out", "--from", s3 + "/team", "-w", tmp_path / "desk", env=other)
    assert pull.returncode == 0 and "copied 2 artifacts" in pull.stdout, pull.stderr
    assert Store(tmp_path / "desk").verify(made) == []
    lineage = cli("lineage", "words.out", "-w", tmp_path / "desk", env=other)  # no journal here: by the manifests
    assert lineage.returncode == 0 and f"{made[:12]} metrics from words.out" in lineage.stdout, lineage.stderr
    assert "artifacts but no run history here" in cli("runs", "-w", tmp_path / "desk", env=other).stderr
    nothing = cli("pull", "nosuch.out", "--from", s3 + "/team", "-w", tmp_path / "desk", env=other)
    assert nothing.returncode == 2 and "'nosuch.out' is no artifact id, id prefix, tag or stage" in nothing.stderr
