"""Metaflow for real: `python flow.py run` runs the exported flow with the artifact ids of `alignpipe run`; after an
injected stage failure, `resume` finishes the graph without rerunning the stages that had finished."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from platform_util import (
    assert_all_cached_under_alignpipe_run,
    attempt_count,
    executed,
    final_ids,
    platform_runs,
)

from alignpipe import api

pytestmark = pytest.mark.slow


def _flow(metaflow_python, d, env, cmd, ok=True):
    p = subprocess.run([str(metaflow_python), "flow.py", cmd], cwd=d, env=env, capture_output=True, text=True,
                       timeout=300)
    assert (p.returncode == 0) == ok, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout + p.stderr


def test_run_gives_the_ids_of_alignpipe_run_and_cache_hits_carry_both_ways(metaflow_python, clean_env, example_spec,
                                                                          alignpipe_exe, reference, reference_copy,
                                                                          tmp_path):
    ws, d = tmp_path / "ws", tmp_path / "flow"
    api.export("metaflow", example_spec, d, alignpipe=alignpipe_exe, workspace=ws)
    _flow(metaflow_python, d, clean_env, "run")
    assert sorted(executed(ws, "metaflow")) == ["chars", "corpus", "report", "words"]
    assert final_ids(ws) == reference[1]
    assert_all_cached_under_alignpipe_run(alignpipe_exe, example_spec, ws)

    d2 = tmp_path / "flow-on-reference"
    api.export("metaflow", example_spec, d2, alignpipe=alignpipe_exe, workspace=reference_copy)
    _flow(metaflow_python, d2, clean_env, "run")
    assert executed(reference_copy, "metaflow") == [] and final_ids(reference_copy) == reference[1]


def test_resume_after_an_injected_failure_does_not_rerun_finished_stages(metaflow_python, clean_env, example_spec,
                                                                         alignpipe_exe, tmp_path):
    shutil.copy(Path(__file__).with_name("platform_stages.py"), tmp_path)  # the failing stage, beside the spec
    block = tmp_path / "block"
    block.write_text("injected")
    example_spec.write_text(example_spec.read_text() + f"""  gate:
    uses: platform_stages:blocked
    inputs: {{report: report.out}}
    params: {{block: {block}}}
""")
    ws, d = tmp_path / "ws", tmp_path / "flow"
    api.export("metaflow", example_spec, d, alignpipe=alignpipe_exe, workspace=ws)
    out = _flow(metaflow_python, d, clean_env, "run", ok=False)
    assert "blocked by" in out
    assert sorted(executed(ws)) == ["chars", "corpus", "report", "words"]
    first_runs = set(platform_runs(ws))
    before = attempt_count(ws)

    block.unlink()
    out = _flow(metaflow_python, d, clean_env, "resume")
    assert executed(ws)[4:] == ["gate"]  # only the failed stage executed
    new_runs = set(platform_runs(ws)) - first_runs
    assert len(new_runs) == 1  # the finished steps were cloned by Metaflow: no task of theirs ran again
    assert attempt_count(ws) - before == 5  # gate: its four upstream cache hits and its own attempt
    assert "Cloning previously run task" in out and "/report/" in out.split("cloned!")[0]
