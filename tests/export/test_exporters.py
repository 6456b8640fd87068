"""The exporters as pure functions over the IR: graph layout, names, generated files that parse, and a generated
file run without its platform failing with the install command (exit 2) rather than an ImportError."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alignpipe import api
from alignpipe.export import PLATFORMS, render
from alignpipe.export.ir import build, py_ident
from alignpipe.export.task import load_for_platform
from alignpipe.pipeline.errors import UserError

RLHF = Path(__file__).resolve().parent / "rlhf_tiny.yaml"


def _ir(spec, **kw):
    return build(load_for_platform(spec), **kw)


def test_levels_put_independent_stages_side_by_side_after_everything_they_consume(example_spec):
    assert _ir(example_spec).levels() == [["corpus"], ["words", "chars"], ["report"]]
    assert _ir(RLHF).levels() == [["data"], ["base"], ["sft"], ["pairs"], ["labels"], ["reward"], ["ppo"],
                                  ["evaluate"]]


@pytest.mark.parametrize(("name", "ident"), [("words", "words"), ("my-stage", "my_stage"), ("class", "class_"),
                                             ("2nd", "_2nd")], ids=["plain", "dash", "keyword", "digit"])
def test_stage_names_become_python_identifiers(name, ident):
    assert py_ident(name) == ident


def test_ir_carries_what_each_platform_maps(example_spec):
    example_spec.write_text(example_spec.read_text().replace(
        "params: {unit: chars, delay: 0.05}",
        "params: {unit: chars, delay: 0.05}\n    retries: 2\n    timeout: 30\n    cache: false\n"
        "    resources: {cpus: 2, gpus: 1, memory: 1GB}"))
    ir = _ir(example_spec, images={"*": "img:1", "report": "img:2"}, alignpipe="/opt/alignpipe", workspace="/ws")
    chars = ir.stage("chars")
    assert (chars.retries, chars.timeout, chars.cache, chars.cpus, chars.gpus, chars.memory) == (2, 30, False, 2, 1,
                                                                                               2**30)
    assert chars.backoff() == [1.0, 2.0] and chars.deps == ("corpus",) and chars.params == {"unit": "chars",
                                                                                             "delay": 0.05}
    assert (chars.image, ir.stage("report").image, ir.stage("report").deps) == ("img:1", "img:2", ("words", "chars"))
    assert ir.command("chars") == ["/opt/alignpipe", "stage", "exec", str(example_spec), "chars", "-w", "/ws"]


@pytest.mark.parametrize("platform", PLATFORMS)
def test_every_export_of_the_rlhf_graph_parses(platform):
    ir = _ir(RLHF, images={"ppo": "registry/alignpipe:gpu"}, workspace="/ws")
    for name, text in render(platform, ir).items():
        if name.endswith(".py"):
            ast.parse(text, name)
        else:
            assert isinstance(yaml.safe_load(text), dict)
    assert render(platform, ir) == render(platform, ir)  # pure: the same IR, the same files


@pytest.mark.parametrize("platform", PLATFORMS)
def test_sweep_branches_get_task_names_every_platform_accepts(platform):
    """The overoptimization example's branches (`ppo@kl_target=0.5`): Airflow task ids and DVC stage names are
    identifiers (DVC reads '@' as foreach and '.' as nesting), the branch's own name is kept for display."""
    ir = _ir(api.builtin_path("overoptimization"), workspace="/ws")
    files = render(platform, ir)
    if platform == "dvc":
        dvc = yaml.safe_load(files["dvc.yaml"])["stages"]
        assert "ppo_kl_target_0_5" in dvc and all(re.fullmatch(r"\w+", name) for name in dvc)
        branch = dvc["ppo_kl_target_0_5"]
        assert "ppo@kl_target=0.5 " in branch["cmd"] and "params" not in branch  # the matrix sets its params
        assert not any("@" in k for k in yaml.safe_load(files["params.yaml"]))
    if platform == "airflow":
        (code,) = files.values()
        ids = re.findall(r"task_id='([^']*)'", code)
        assert "ppo_kl_target_0_5" in ids and all(re.fullmatch(r"[\w.-]+", i) for i in ids)
        assert "task_display_name='ppo@kl_target=0.5'" in code


def test_two_stages_with_one_task_name_are_refused(example_spec):
    example_spec.write_text(example_spec.read_text().replace("  chars:", "  my-stage:\n    uses: example.corpus\n"
                                                             "  my_stage:\n    uses: example.corpus\n  chars:"))
    with pytest.raises(UserError, match="stages 'my-stage' and 'my_stage' both become the task name 'my_stage'"):
        _ir(example_spec)


def test_a_multi_process_stage_asks_for_all_its_ranks_and_one_spanning_nodes_is_refused(tmp_path):
    spec = tmp_path / "rlhf.yaml"
    two = RLHF.read_text().replace("params: {epochs: 1}\n    resources: {cpus: 1}",
                                   "params: {epochs: 1}\n    resources: {cpus: 1, procs_per_node: 2, memory: 1GB}")
    spec.write_text(two)
    sft = _ir(spec).stage("sft")
    assert (sft.cpus, sft.gpus, sft.memory) == (2, 0, 2 * 2**30)
    spec.write_text(two.replace("procs_per_node: 2,", "nodes: 2,"))
    with pytest.raises(UserError, match=r"stages\.sft\.resources\.nodes: asks for 2 nodes but this machine is one "
                                        r"node; lower nodes \(a Ray cluster with more nodes runs it with --executor"):
        _ir(spec)


@pytest.mark.parametrize(("platform", "what"), [("prefect", "Prefect 3"), ("metaflow", "Metaflow"),
                                                ("kfp", "the Kubeflow Pipelines SDK (kfp 2)")])
def test_a_generated_file_run_without_its_platform_names_the_install_command(example_spec, tmp_path, platform, what):
    (path,) = api.export(platform, example_spec, tmp_path / "out")
    p = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert f"this file needs {what}: pip install 'alignpipe[{platform}]'" in p.stderr


def test_images_only_where_the_platform_can_name_one_and_only_for_existing_stages(example_spec, tmp_path):
    with pytest.raises(UserError, match="export prefect: --image is not supported .* only kfp and airflow take it"):
        api.export("prefect", example_spec, tmp_path / "p", images={"*": "img:1"})
    with pytest.raises(UserError, match="--image wrods=...: .* has no stage 'wrods'; its stages: corpus, words"):
        api.export("kfp", example_spec, tmp_path / "k", images={"wrods": "img:1"})
    assert not (tmp_path / "p").exists() and not (tmp_path / "k").exists()
