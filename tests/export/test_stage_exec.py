"""`alignpipe stage exec`, the task every exported platform runs: one stage, the workspace shared with sibling
tasks and closed to runs, upstream from the cache, the platform recorded, the same artifact ids as `alignpipe run`."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from platform_util import final_ids, platform_runs

from alignpipe.api import Workspace
from alignpipe.pipeline.journal import MIGRATIONS, Journal, WorkspaceLock

ORDER = ["corpus", "words", "chars", "report"]


def _exec(exe, spec, stage, ws, *extra, platform="airflow", run_id="manual__1"):
    return subprocess.run([exe, "stage", "exec", str(spec), stage, "-w", str(ws), "--platform", platform,
                           "--platform-run-id", run_id, *map(str, extra)], capture_output=True, text=True, timeout=60)


def test_stages_one_by_one_publish_the_ids_of_alignpipe_run_and_record_the_platform(alignpipe_exe, example_spec,
                                                                                     reference, tmp_path):
    ws = tmp_path / "ws"
    for i, stage in enumerate(ORDER):
        p = _exec(alignpipe_exe, example_spec, stage, ws, run_id=f"run-{i}")
        assert p.returncode == 0, p.stderr
        assert f"{stage} done (airflow run run-{i}" in p.stdout
    assert final_ids(ws) == reference[1]
    assert sorted(platform_runs(ws).values()) == [("airflow", f"run-{i}") for i in range(4)]
    manifest = Workspace(ws).show("report").manifest
    assert manifest["producer"]["platform"] == "airflow" and manifest["producer"]["platform_run_id"] == "run-3"
    ref_manifest = Workspace(reference[0]).show("report").manifest
    assert "platform" not in ref_manifest["producer"] and ref_manifest["id"] == manifest["id"]
    runs = json.loads(subprocess.run([alignpipe_exe, "runs", "-w", str(ws), "--json"], capture_output=True,
                                     text=True).stdout)
    assert {(r["platform"], r["platform_run_id"], r["status"]) for r in runs} == {
        ("airflow", f"run-{i}", "done") for i in range(4)}


def test_a_missing_upstream_output_names_the_stage_to_run_first(alignpipe_exe, example_spec, tmp_path):
    p = _exec(alignpipe_exe, example_spec, "words", tmp_path / "ws")
    assert p.returncode == 2
    assert "stage 'corpus' has no cached output" in p.stderr
    assert "run stage 'corpus' first (its airflow task)" in p.stderr
    assert "Traceback" not in p.stderr


def test_sibling_tasks_share_the_workspace_but_a_run_or_gc_holds_it_alone(alignpipe_exe, example_spec, tmp_path):
    ws = tmp_path / "ws"
    assert _exec(alignpipe_exe, example_spec, "corpus", ws).returncode == 0
    words, chars = (subprocess.Popen([alignpipe_exe, "stage", "exec", str(example_spec), s, "-w", str(ws),
                                      "--platform", "prefect"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True) for s in ("words", "chars"))
    assert words.wait(60) == 0 and chars.wait(60) == 0, words.stderr.read() + chars.stderr.read()

    with WorkspaceLock(ws).acquire(shared=True):  # a platform task is running
        p = subprocess.run([alignpipe_exe, "run", str(example_spec), "-w", str(ws)], capture_output=True, text=True)
        assert p.returncode == 2 and "workspace is in use" in p.stderr
        p = subprocess.run([alignpipe_exe, "gc", "-w", str(ws)], capture_output=True, text=True)
        assert p.returncode == 2 and "workspace is in use" in p.stderr
        assert _exec(alignpipe_exe, example_spec, "report", ws).returncode == 0  # a sibling task still runs
    with WorkspaceLock(ws).acquire():  # `alignpipe run` or gc
        p = _exec(alignpipe_exe, example_spec, "report", ws)
        assert p.returncode == 2 and "workspace is in use by run pid" in p.stderr


def test_a_task_never_marks_other_runs_abandoned_but_alignpipe_run_still_does(alignpipe_exe, example_spec, tmp_path):
    ws = tmp_path / "ws"
    j = Journal(ws)
    live = j.start_run("example", str(example_spec), ["a sibling task"], platform="kfp", platform_run_id="job-1")
    j.close()
    assert _exec(alignpipe_exe, example_spec, "corpus", ws).returncode == 0
    assert {r["id"]: r["status"] for r in Workspace(ws).runs()}[live] == "running"
    assert subprocess.run([alignpipe_exe, "run", str(example_spec), "-w", str(ws), "-q"]).returncode == 0
    assert {r["id"]: r["status"] for r in Workspace(ws).runs()}[live] == "abandoned"


def test_a_journal_from_before_platform_runs_is_read_then_migrated(alignpipe_exe, example_spec, tmp_path):
    ws = tmp_path / "ws"
    (ws / ".alignpipe").mkdir(parents=True)
    db = sqlite3.connect(ws / ".alignpipe" / "journal.db")
    for statement in (st for step in MIGRATIONS[:2] for st in step):  # the schema before platform_runs
        db.execute(statement)
    db.execute("INSERT INTO runs VALUES ('old-run', 'example', 'x.yaml', 1.0, 2.0, 'done', 1, 'h', '[]')")
    db.commit()
    db.close()
    assert Workspace(ws).runs()[0]["platform"] is None  # read-only: no table yet, no error
    assert _exec(alignpipe_exe, example_spec, "corpus", ws).returncode == 0
    runs = {r["id"]: (r["platform"], r["status"]) for r in Workspace(ws).runs()}
    assert runs["old-run"] == (None, "done") and ("airflow", "done") in runs.values()


def test_a_params_file_replaces_the_spec_params_and_names_its_own_errors(alignpipe_exe, example_spec, tmp_path):
    ws, params = tmp_path / "ws", tmp_path / "params.yaml"
    params.write_text("corpus: {lines: 10}\n")
    assert _exec(alignpipe_exe, example_spec, "corpus", ws, "--params-file", params).returncode == 0
    assert Workspace(ws).show("corpus").manifest["params"]["lines"] == 10
    params.write_text("corpus: {lines: many}\nnope: {}\n")
    p = _exec(alignpipe_exe, example_spec, "corpus", ws, "--params-file", params)
    assert p.returncode == 2 and f"{params}: 'nope' is no stage of" in p.stderr
    params.write_text("corpus: {lines: many}\n")
    p = _exec(alignpipe_exe, example_spec, "corpus", ws, "--params-file", params)
    assert p.returncode == 2 and "stages.corpus.params.lines: Input should be a valid integer" in p.stderr


@pytest.mark.parametrize("platform", ["dvc", "prefect"])
def test_export_refuses_an_invalid_pipeline_with_the_errors_of_validate(alignpipe_exe, tmp_path, platform):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nstages:\n  corpus: {uses: example.corpus, params: {lines: many}}\n"
                   "  words: {uses: example.count, inputs: {text: corpus.nope}}\n")
    validate = subprocess.run([alignpipe_exe, "validate", str(bad)], capture_output=True, text=True)
    export = subprocess.run([alignpipe_exe, "export", platform, str(bad), "-o", str(tmp_path / "out")],
                            capture_output=True, text=True)
    assert validate.returncode == export.returncode == 2
    assert export.stderr == validate.stderr and "stages.words.inputs.text" in export.stderr
    assert not (tmp_path / "out").exists()


def test_export_never_overwrites_a_directory_without_force_and_keeps_foreign_files(alignpipe_exe, example_spec,
                                                                                    tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "dvc.yaml").write_text("mine\n")
    (out / "dvc.lock").write_text("lock\n")
    p = subprocess.run([alignpipe_exe, "export", "dvc", str(example_spec), "-o", str(out)], capture_output=True,
                       text=True)
    assert p.returncode == 2 and "exists and is not empty; pass --force" in p.stderr
    assert (out / "dvc.yaml").read_text() == "mine\n"
    p = subprocess.run([alignpipe_exe, "export", "dvc", str(example_spec), "-o", str(out), "--force"],
                       capture_output=True, text=True)
    assert p.returncode == 0 and "stage exec" in (out / "dvc.yaml").read_text()
    assert (out / "dvc.lock").read_text() == "lock\n"
    p = subprocess.run([alignpipe_exe, "export", "argo", str(example_spec), "-o", str(tmp_path / "x")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "unknown platform 'argo'; expected one of: kfp, airflow" in p.stderr


def test_a_multi_process_stage_runs_its_ranks_inside_the_task(alignpipe_exe, tmp_path):
    """The task's machine holds both ranks (before: the runner waited forever for a 2-CPU slot on 1 CPU)."""
    shutil.copy(Path(__file__).with_name("platform_stages.py"), tmp_path)
    spec = tmp_path / "ranks.yaml"
    spec.write_text(f"""name: ranks
stages:
  r:
    uses: platform_stages:ranks
    params: {{trace: {tmp_path / 'trace'}}}
    resources: {{cpus: 1, procs_per_node: 2}}
""")
    p = _exec(alignpipe_exe, spec, "r", tmp_path / "ws")
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in tmp_path.glob("rank-*")) == ["rank-0", "rank-1"]
    art = Workspace(tmp_path / "ws").show("r")
    assert (art.path / "world.txt").read_text() == "2" and art.manifest["summary"]["world_size"] == 2
