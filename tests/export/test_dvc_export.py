"""DVC for real: `dvc repro` of the exported dvc.yaml runs the graph through `alignpipe stage exec`; a second repro
executes nothing; a changed param in params.yaml reruns exactly that stage and what consumes its changed output."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from platform_util import (
    assert_all_cached_under_alignpipe_run,
    attempt_count,
    attempts,
    executed,
    final_ids,
    platform_runs,
)

from alignpipe import api

pytestmark = pytest.mark.slow


def _repro(dvc_bin, d, env):
    p = subprocess.run([str(dvc_bin), "repro"], cwd=d, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def _dvc_repo(dvc_bin, example_spec, ws, alignpipe_exe, d, env):
    api.export("dvc", example_spec, d, alignpipe=alignpipe_exe, workspace=ws)
    for cmd in (["init", "--no-scm", "-q"], ["config", "core.analytics", "false"]):
        subprocess.run([str(dvc_bin), *cmd], cwd=d, env=env, check=True, timeout=60)


def test_repro_runs_the_graph_then_nothing_then_exactly_the_changed_stage_and_its_consumers(
        dvc_bin, example_spec, alignpipe_exe, reference, clean_env, tmp_path):
    ws, d = tmp_path / "ws", tmp_path / "dvc"
    _dvc_repo(dvc_bin, example_spec, ws, alignpipe_exe, d, clean_env)

    _repro(dvc_bin, d, clean_env)
    assert sorted(executed(ws, "dvc")) == ["chars", "corpus", "report", "words"]
    assert final_ids(ws) == reference[1]  # the same artifact ids as `alignpipe run`
    assert {p for p, _ in platform_runs(ws).values()} == {"dvc"}
    assert_all_cached_under_alignpipe_run(alignpipe_exe, example_spec, ws)  # and the reverse: see below

    before = attempt_count(ws)
    out = _repro(dvc_bin, d, clean_env)
    assert attempt_count(ws) == before, "a second repro started a stage"
    assert "up to date" in out.lower()

    params = yaml.safe_load((d / "params.yaml").read_text())
    params["words"]["unit"] = "chars"  # words' output changes: report consumes it, chars and corpus do not
    (d / "params.yaml").write_text(yaml.safe_dump(params))
    n = len(executed(ws))
    out = _repro(dvc_bin, d, clean_env)
    assert executed(ws)[n:] == ["words", "report"]
    assert "'corpus' didn't change" in out and "'chars' didn't change" in out


def test_stages_finished_by_alignpipe_run_are_cache_hits_under_dvc(dvc_bin, example_spec, alignpipe_exe, reference,
                                                                   reference_copy, clean_env, tmp_path):
    d = tmp_path / "dvc"
    _dvc_repo(dvc_bin, example_spec, reference_copy, alignpipe_exe, d, clean_env)
    _repro(dvc_bin, d, clean_env)  # every stage already ran under `alignpipe run`: all cache hits
    assert executed(reference_copy, "dvc") == []
    assert final_ids(reference_copy) == reference[1]


def test_a_stage_with_retries_retries_inside_its_dvc_task(dvc_bin, flaky_spec, alignpipe_exe, clean_env, tmp_path):
    ws, d = tmp_path / "ws", tmp_path / "dvc"
    api.export("dvc", flaky_spec, d, alignpipe=alignpipe_exe, workspace=ws)
    assert "--retry-here" in yaml.safe_load((d / "dvc.yaml").read_text())["stages"]["flaky"]["cmd"]
    subprocess.run([str(dvc_bin), "init", "--no-scm", "-q"], cwd=d, env=clean_env, check=True, timeout=60)
    _repro(dvc_bin, d, clean_env)
    assert [status for status, _ in attempts(ws, "flaky")] == ["failed", "done"]  # DVC cannot retry: alignpipe did
