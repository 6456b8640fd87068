"""Every validation error: named file, stage and field, and what is expected; nothing runs."""

import pytest
from engine_util import cli

from alignpipe import api
from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.spec import Machine, load_pipeline

OK_STAGE = {"uses": "example.corpus", "params": {"lines": 3}}


def spec(**stages):
    return {"name": "p", "seed": 0, "stages": stages}


def load(write_pipeline, data, machine=None):
    return load_pipeline(write_pipeline(data), machine=machine)


CASES = [
    (spec(a={"uses": "nosuch"}), r"pipeline.yaml: stages\.a\.uses: unknown stage type 'nosuch'; expected one of"),
    (spec(a={"uses": "example.corpus", "params": {"linez": 3}}),
     r"stages\.a\.params\.linez: unknown field; remove it or check its spelling"),
    (spec(a={"uses": "example.corpus", "params": {"lines": "many"}}),
     r"stages\.a\.params\.lines: Input should be a valid integer.*got 'many'"),
    (spec(a={"uses": "example.corpus", "params": {"lines": 0}}), r"stages\.a\.params\.lines: Input should be greater"),
    (spec(a=OK_STAGE, b={"uses": "example.count", "inputs": {"text": "nope.out"}}),
     r"stages\.b\.inputs\.text: 'nope.out' names no stage 'nope' and no file"),
    (spec(a=OK_STAGE, b={"uses": "example.count", "inputs": {"text": "a.missing"}}),
     r"stages\.b\.inputs\.text: stage 'a' has no output 'missing'; it produces: out"),
    (spec(a=OK_STAGE, b={"uses": "example.count", "inputs": {"txt": "a.out"}}),
     r"stages\.b\.inputs\.txt: stage type 'example.count' takes no input 'txt'; it takes: text"),
    (spec(a=OK_STAGE, b={"uses": "example.count"}), r"stages\.b\.inputs: missing required input 'text'"),
    (spec(a={"uses": "example.count", "inputs": {"text": "b.out"}},
          b={"uses": "example.count", "inputs": {"text": "a.out"}}), r"stages form a cycle: a -> b -> a"),
    (spec(a={**OK_STAGE, "resources": {"gpus": 1}}),
     r"stages\.a\.resources\.gpus: asks for 1 GPU\(s\) but this machine has no GPU; set gpus: 0"),
    (spec(a={**OK_STAGE, "resources": {"cpus": 64}}),
     r"stages\.a\.resources\.cpus: asks for 64 CPUs but this machine"),
    (spec(a={**OK_STAGE, "resources": {"memory": "9TB"}}), r"stages\.a\.resources\.memory: asks for .* GB but"),
    (spec(a={**OK_STAGE, "resources": {"memory": "lots"}}), r"stages\.a\.resources\.memory: .*not a size"),
    (spec(a={**OK_STAGE, "retries": -1}), r"stages\.a\.retries: Input should be greater than or equal to 0"),
    (spec(a={**OK_STAGE, "colour": "red"}), r"stages\.a\.colour: unknown field"),
    (spec(a={"uses": "teststages:nosuch"}), r"module 'teststages' has no function 'nosuch'"),
    (spec(a={"uses": "nosuchmodule:f"}), r"cannot import module 'nosuchmodule'"),
    (spec(**{"a b": OK_STAGE}), r"stages\.a b: stage name must match"),
    ({"seed": 0, "stages": {}}, r"pipeline.yaml: name: Field required"),
]


@pytest.mark.parametrize("data,match", CASES, ids=[m.split(":")[-1][:40] for _, m in CASES])
def test_validation_errors(write_pipeline, data, match):
    with pytest.raises(UserError, match=match):
        load(write_pipeline, data, Machine(cpus=2, gpus=0, memory=8 * 1024**3))


def test_all_problems_reported_at_once(write_pipeline):
    data = spec(a={"uses": "nosuch"}, b={"uses": "example.corpus", "params": {"x": 1}},
                c={"uses": "example.count", "params": {"unit": "bytes"}, "inputs": {"text": "b.text"},
                   "resources": {"gpus": 1}})
    with pytest.raises(UserError) as e:
        load(write_pipeline, data, Machine(cpus=2, gpus=0, memory=None))
    fields = [p.split(": ")[1] for p in e.value.problems]
    assert fields == ["stages.a.uses", "stages.b.params.x", "stages.c.params.unit", "stages.c.resources.gpus",
                      "stages.c.inputs.text"]


def test_duplicate_stage_names_in_yaml(write_pipeline):
    p = write_pipeline("""
        name: p
        stages:
          a: {uses: example.corpus}
          a: {uses: example.corpus}
        """)
    with pytest.raises(UserError, match=r"duplicate key 'a'.*names must be unique"):
        load_pipeline(p)


def test_duplicate_stage_names_in_python():
    with pytest.raises(UserError, match="duplicate stage name 'a'"):
        api.from_dict({"name": "p", "stages": [{"name": "a", **OK_STAGE}, {"name": "a", **OK_STAGE}]})


def test_gpu_stage_accepted_where_gpus_exist(write_pipeline):
    pipe = load(write_pipeline, spec(a={**OK_STAGE, "resources": {"gpus": 2}}), Machine(cpus=8, gpus=2, memory=None))
    assert pipe.stages["a"].resources.gpus == 2


def test_external_inputs_resolve_relative_to_the_spec(write_pipeline, tmp_path):
    (tmp_path / "data.txt").write_text("x")
    pipe = load(write_pipeline, spec(b={"uses": "example.count", "inputs": {"text": "data.txt"}}))
    assert pipe.stages["b"].inputs["text"].uri == str(tmp_path / "data.txt")


def test_missing_external_file(write_pipeline):
    with pytest.raises(UserError, match=r"stages\.b\.inputs\.text: no such file or directory .*data/x.jsonl"):
        load(write_pipeline, spec(b={"uses": "example.count", "inputs": {"text": "data/x.jsonl"}}))


def test_bad_yaml_and_missing_file(write_pipeline, tmp_path):
    with pytest.raises(UserError, match="invalid YAML"):
        load_pipeline(write_pipeline("name: [unclosed\n"))
    with pytest.raises(UserError, match="no such pipeline file"):
        load_pipeline(tmp_path / "nope.yaml")


def test_cli_reports_validation_errors_without_traceback(write_pipeline, tmp_path):
    p = write_pipeline(spec(a={"uses": "example.corpus", "params": {"lines": "many"}}))
    r = cli("run", p, "-w", tmp_path / "ws")
    assert r.returncode == 2
    assert "stages.a.params.lines" in r.stderr and "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "ws").exists(), "nothing may run (or be created) when validation fails"
    r = cli("validate", p)
    assert r.returncode == 2 and "valid integer" in r.stderr


def test_cli_validate_ok(write_pipeline):
    r = cli("validate", write_pipeline(spec(a=OK_STAGE)))
    assert r.returncode == 0 and "1 stages" in r.stdout


def test_the_builtin_pipeline_loads_like_a_file_with_its_workspace_under_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pipe = api.load()
    assert pipe.workspace() == tmp_path / "workspace"
    stages = ["data", "base", "sft", "pairs", "labels", "reward", "ppo", "evaluate"]
    assert list(pipe.stages) == list(load_pipeline(api.builtin_path()).stages) == stages
    assert load_pipeline(api.builtin_path()).workspace() == api.builtin_path().parent / "workspace"


def test_the_two_process_example_in_the_docs_validates_here():
    """docs/examples/rlhf-2proc.yaml (README, Scaling out) names its groups right and fits a 2-core machine."""
    from pathlib import Path

    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "rlhf-2proc.yaml"
    r = cli("validate", example)
    assert r.returncode == 0, r.stderr
    assert "8 stages" in r.stdout
