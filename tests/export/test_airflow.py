"""Airflow 3 for real: DagBag imports the exported DAG file with no errors and the spec's fields on its tasks, and
dag.test() runs it end to end (sqlite AIRFLOW_HOME in a temp dir; no scheduler, no webserver) with the artifact
ids of `alignpipe run`; a stage given a container image becomes a KubernetesPodOperator."""

from __future__ import annotations

import pytest
from platform_util import assert_all_cached_under_alignpipe_run, executed, final_ids, platform_runs, run_airflow

from alignpipe import api

pytestmark = pytest.mark.slow


def test_dagbag_imports_the_dag_and_dag_test_runs_it_with_the_ids_of_alignpipe_run(
        airflow_python, airflow_home, example_spec, alignpipe_exe, reference, tmp_path):
    spec = example_spec.read_text().replace("params: {unit: words, delay: 0.05}",
                                            "params: {unit: words, delay: 0.05}\n    retries: 2\n    timeout: 300\n"
                                            "    resources: {cpus: 2, memory: 1GB}")
    example_spec.write_text(spec)  # the same stages and params, so the same ids: only task settings differ
    ws, dags = tmp_path / "ws", tmp_path / "dags"
    api.export("airflow", example_spec, dags, alignpipe=alignpipe_exe, workspace=ws)
    bag, run = run_airflow(airflow_python, airflow_home, dags, "--test")
    assert bag["import_errors"] == {}
    tasks = bag["dags"]["example"]
    assert {n: t["upstream"] for n, t in tasks.items()} == {"corpus": [], "words": ["corpus"], "chars": ["corpus"],
                                                            "report": ["chars", "words"]}
    words = tasks["words"]
    assert (words["retries"], words["retry_delay_s"], words["backoff"], words["timeout_s"]) == (2, 1.0, 2.0, 300.0)
    assert words["pool_slots"] == 2 and (words["resources"]["cpus"], words["resources"]["ram"]) == (2.0, 1024)
    assert "stage exec" in words["bash_command"] and words["bash_command"].endswith('"$AIRFLOW_CTX_DAG_RUN_ID"')

    assert run == {"state": "success"}
    assert sorted(executed(ws, "airflow")) == ["chars", "corpus", "report", "words"]
    assert final_ids(ws) == reference[1]
    (run_id,) = {r for _, r in platform_runs(ws).values()}
    assert run_id.startswith("manual__")  # the DAG run id, as Airflow named it
    assert_all_cached_under_alignpipe_run(alignpipe_exe, example_spec, ws)


def test_stages_finished_by_alignpipe_run_are_cache_hits_under_airflow(airflow_python, airflow_home, example_spec,
                                                                       alignpipe_exe, reference, reference_copy,
                                                                       tmp_path):
    dags = tmp_path / "dags"
    api.export("airflow", example_spec, dags, alignpipe=alignpipe_exe, workspace=reference_copy)
    run_airflow(airflow_python, airflow_home, dags, "--test")
    assert executed(reference_copy, "airflow") == [] and final_ids(reference_copy) == reference[1]


def test_a_stage_with_an_image_becomes_a_kubernetes_pod_with_its_resources(airflow_python, airflow_home,
                                                                          example_spec, tmp_path):
    spec = example_spec.read_text().replace("params: {unit: chars, delay: 0.05}", "params: {unit: chars, delay: 0.05}"
                                            "\n    resources: {cpus: 2, memory: 512MB}")
    example_spec.write_text(spec)
    dags = tmp_path / "dags"
    api.export("airflow", example_spec, dags, images={"chars": "registry.example/alignpipe:1"}, workspace="/mnt/ws",
               alignpipe="alignpipe")
    bag, _ = run_airflow(airflow_python, airflow_home, dags)
    assert bag["import_errors"] == {}
    chars = bag["dags"]["example"]["chars"]
    assert chars["operator"] == "KubernetesPodOperator" and chars["image"] == "registry.example/alignpipe:1"
    assert chars["cmds"] == ["alignpipe"] and chars["arguments"][:3] == ["stage", "exec", str(example_spec)]
    assert chars["arguments"][-1] == "{{ run_id }}" and chars["limits"] == {"cpu": "2", "memory": "512Mi"}
    assert bag["dags"]["example"]["words"]["operator"] == "BashOperator"
