"""Prefect 3 for real: the exported flow runs locally (Prefect's temporary server, a private PREFECT_HOME), its
artifacts are those of `alignpipe run`, and a second flow run executes no stage (alignpipe's cache decides)."""

from __future__ import annotations

import subprocess

import pytest
from platform_util import assert_all_cached_under_alignpipe_run, attempts, executed, final_ids, platform_runs

from alignpipe import api

pytestmark = pytest.mark.slow


@pytest.fixture
def prefect_env(clean_env, tmp_path):
    return {**clean_env, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING"}


def _flow(prefect_python, d, env):
    p = subprocess.run([str(prefect_python), "flow.py"], cwd=d, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p


def test_the_flow_runs_the_graph_then_a_second_run_executes_no_stage(prefect_python, prefect_env, example_spec,
                                                                     alignpipe_exe, reference, tmp_path):
    ws, d = tmp_path / "ws", tmp_path / "flow"
    api.export("prefect", example_spec, d, alignpipe=alignpipe_exe, workspace=ws)
    _flow(prefect_python, d, prefect_env)
    assert sorted(executed(ws, "prefect")) == ["chars", "corpus", "report", "words"]
    assert final_ids(ws) == reference[1]
    flow_runs = {run_id for _, run_id in platform_runs(ws).values()}
    assert len(flow_runs) == 1 and None not in flow_runs  # four tasks, one Prefect flow run id

    _flow(prefect_python, d, prefect_env)
    assert len(executed(ws)) == 4, "the second flow run executed a stage"
    assert len({run_id for _, run_id in platform_runs(ws).values()}) == 2
    assert_all_cached_under_alignpipe_run(alignpipe_exe, example_spec, ws)


def test_stages_finished_by_alignpipe_run_are_cache_hits_under_prefect(prefect_python, prefect_env, example_spec,
                                                                       alignpipe_exe, reference, reference_copy,
                                                                       tmp_path):
    d = tmp_path / "flow"
    api.export("prefect", example_spec, d, alignpipe=alignpipe_exe, workspace=reference_copy)
    _flow(prefect_python, d, prefect_env)
    assert executed(reference_copy, "prefect") == [] and final_ids(reference_copy) == reference[1]


def test_a_failed_attempt_is_retried_by_prefect_and_resumes_in_the_same_flow_run(prefect_python, prefect_env,
                                                                                   flaky_spec, alignpipe_exe,
                                                                                   tmp_path):
    ws, d = tmp_path / "ws", tmp_path / "flow"
    api.export("prefect", flaky_spec, d, alignpipe=alignpipe_exe, workspace=ws)
    assert "retries=1, retry_delay_seconds=[1.0]" in (d / "flow.py").read_text()
    _flow(prefect_python, d, prefect_env)
    tries = attempts(ws, "flaky")
    assert [status for status, _ in tries] == ["failed", "done"]  # one task, retried once by Prefect
    assert len({run_id for _, run_id in tries}) == 1 and sorted(executed(ws)) == ["corpus", "flaky", "words"]
