"""Kubeflow Pipelines v2 for real: the kfp SDK compiles the exported pipeline.py, the YAML parses strictly into
PipelineSpec with the spec's retry, resource and caching settings, and kfp.local runs the graph end to end with
the artifact ids of `alignpipe run`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from platform_util import assert_all_cached_under_alignpipe_run, executed, final_ids, platform_runs

from alignpipe import api

pytestmark = pytest.mark.slow
DRIVER = Path(__file__).resolve().parent / "kfp_driver.py"


def _py(kfp_python, d, *args):
    p = subprocess.run([str(kfp_python), *map(str, args)], cwd=d, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout


def test_compiled_yaml_parses_strictly_with_the_specs_settings_and_runs_locally_with_alignpipe_runs_ids(
        kfp_python, example_spec, alignpipe_exe, reference, tmp_path):
    spec = example_spec.read_text().replace(
        "params: {unit: chars, delay: 0.05}",
        "params: {unit: chars, delay: 0.05}\n    retries: 3\n    resources: {cpus: 2, gpus: 1, memory: 1GB}")
    example_spec.write_text(spec)  # task settings only: the same fingerprints, so the same ids
    ws, d = tmp_path / "ws", tmp_path / "kfp"
    api.export("kfp", example_spec, d, alignpipe=alignpipe_exe, workspace=ws)
    _py(kfp_python, d, "pipeline.py")
    parsed = json.loads(_py(kfp_python, d, DRIVER, d / "pipeline.yaml"))
    tasks = parsed["tasks"]
    assert parsed["pipeline"] == "example"
    assert {n: t["upstream"] for n, t in tasks.items()} == {"corpus": [], "words": ["corpus"], "chars": ["corpus"],
                                                            "report": ["chars", "words"]}
    assert all(t["has_caching_options"] and t["cache"] is False for t in tasks.values())
    assert tasks["chars"]["retry"] == {"maxRetryCount": 3, "backoffDuration": "1s", "backoffFactor": 2.0,
                                      "backoffMaxDuration": "3600s"}
    assert tasks["words"]["retry"] == {}
    assert tasks["chars"]["resources"] == {
        "cpuLimit": 2.0, "cpuRequest": 2.0, "resourceCpuLimit": "2", "resourceCpuRequest": "2",
        "memoryLimit": 1.073741824, "memoryRequest": 1.073741824, "resourceMemoryLimit": "1024Mi",
        "resourceMemoryRequest": "1024Mi", "accelerator": {"type": "nvidia.com/gpu", "count": "1",
                                                           "resourceType": "nvidia.com/gpu", "resourceCount": "1"}}

    _py(kfp_python, d, "pipeline.py", "--local")
    assert sorted(executed(ws, "kfp")) == ["chars", "corpus", "report", "words"]
    assert final_ids(ws) == reference[1]
    assert len({run_id for _, run_id in platform_runs(ws).values()}) == 1  # the pipeline job's id, on every task
    # this machine has no GPU: tell `alignpipe run` it has one (nothing runs: every stage is a cache hit)
    assert_all_cached_under_alignpipe_run(alignpipe_exe, example_spec, ws, ALIGNPIPE_GPUS="1")


def test_stages_finished_by_alignpipe_run_are_cache_hits_under_kfp_local(kfp_python, example_spec, alignpipe_exe,
                                                                         reference, reference_copy, tmp_path):
    d = tmp_path / "kfp"
    api.export("kfp", example_spec, d, alignpipe=alignpipe_exe, workspace=reference_copy)
    _py(kfp_python, d, "pipeline.py", "--local")
    assert executed(reference_copy, "kfp") == [] and final_ids(reference_copy) == reference[1]
