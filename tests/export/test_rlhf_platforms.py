"""The RLHF graph (data -> base -> sft -> generate -> label -> reward -> ppo -> evaluate, tiny settings) under
Airflow and DVC: every artifact id equals `alignpipe run`'s with the same spec and seed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from platform_util import executed, final_ids, run_airflow

from alignpipe import api

pytestmark = pytest.mark.slow
SPEC = Path(__file__).resolve().parent / "rlhf_tiny.yaml"
STAGES = ["base", "data", "evaluate", "labels", "pairs", "ppo", "reward", "sft"]


@pytest.fixture(scope="module")
def rlhf_reference(alignpipe_exe, tmp_path_factory):
    ws = tmp_path_factory.mktemp("rlhf-reference") / "ws"
    p = subprocess.run([alignpipe_exe, "run", str(SPEC), "-w", str(ws), "-q"], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    assert p.returncode == 0, p.stderr
    return final_ids(ws)


def test_airflow_runs_the_rlhf_graph_to_the_ids_of_alignpipe_run(airflow_python, airflow_home, alignpipe_exe,
                                                                  rlhf_reference, tmp_path):
    ws, dags = tmp_path / "ws", tmp_path / "dags"
    api.export("airflow", SPEC, dags, alignpipe=alignpipe_exe, workspace=ws)
    bag, run = run_airflow(airflow_python, airflow_home, dags, "--test")
    assert bag["import_errors"] == {} and run == {"state": "success"}
    assert sorted(executed(ws, "airflow")) == STAGES
    assert final_ids(ws) == rlhf_reference


def test_dvc_runs_the_rlhf_graph_to_the_ids_of_alignpipe_run(dvc_bin, clean_env, alignpipe_exe, rlhf_reference,
                                                             tmp_path):
    ws, d = tmp_path / "ws", tmp_path / "dvc"
    api.export("dvc", SPEC, d, alignpipe=alignpipe_exe, workspace=ws)
    for cmd in (["init", "--no-scm", "-q"], ["repro"]):
        p = subprocess.run([str(dvc_bin), *cmd], cwd=d, env=clean_env, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert sorted(executed(ws, "dvc")) == STAGES
    assert final_ids(ws) == rlhf_reference
