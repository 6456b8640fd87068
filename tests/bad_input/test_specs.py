"""Bad pipeline specs: every problem names the file, the stage and the field, says what is expected, exits 2 and
writes nothing (no workspace is created)."""

import pytest
import yaml
from badinput import Case, chain, ids, run_case, write

OK = {"uses": "example.corpus", "params": {"lines": 3}}
INF = float("inf")


def spec(stages, **top):
    return yaml.safe_dump({"name": "p", "seed": 0, "workspace": "ws", **top, "stages": stages}, sort_keys=False)


def bad(case_id, stages, patterns, **top):
    """`alignpipe run p.yaml` on a spec built from `stages`."""
    return Case(case_id, ["run", "p.yaml"], 2, [f"p.yaml: {p}" if not p.startswith("^") else p[1:] for p in patterns],
                setup=chain(write("x.txt", "x\n"), write("p.yaml", spec(stages, **top))))


def raw(case_id, text, patterns):
    return Case(case_id, ["run", "p.yaml"], 2, patterns, setup=write("p.yaml", text))


RAISES_AT_IMPORT = "x = 1 / 0\n\ndef f(ctx):\n    pass\n"

CASES = [
    raw("invalid-yaml", "name: p\nstages: {a: [", [r"p.yaml: invalid YAML"]),
    Case("not-utf8", ["run", "p.yaml"], 2, [r"p.yaml: not UTF-8 text; save the pipeline spec as UTF-8"],
         setup=write("p.yaml", b"name: p\xff\xfe\n")),
    raw("top-level-list", "- a\n- b\n", [r"p.yaml: expected a mapping with 'name', 'seed', 'workspace' and 'stages'"]),
    raw("duplicate-stage", "name: p\nstages:\n  a: {uses: example.corpus}\n  a: {uses: example.corpus}\n",
        [r"duplicate key 'a' \(first at line 3\); names must be unique"]),
    raw("missing-name", "seed: 0\nstages: {a: {uses: example.corpus}}\n", [r"p.yaml: name: Field required"]),
    bad("unknown-top-field", {"a": OK}, [r"colour: unknown field; remove it or check its spelling"], colour="red"),
    bad("seed-negative", {"a": OK}, [r"seed: Input should be greater than or equal to 0 \(got -1\)"], seed=-1),
    bad("seed-too-big", {"a": OK}, [r"seed: Input should be less than or equal to 9223372036854775807"], seed=2**63),
    bad("seed-bool", {"a": OK}, [r"seed: expected a number, got the boolean true"], seed=True),
    bad("verify-unknown", {"a": OK}, [r"verify: Input should be 'always', 'inputs' or 'never'"], verify="sometimes"),
    bad("workspace-uri", {"a": OK}, [r"^workspace 'http://host/x': the store serves local directories and object "
                                     r"stores \(s3://, gs://.*\), not http:// URIs"], workspace="http://host/x"),
    bad("unknown-stage-type", {"a": {"uses": "nosuch"}},
        [r"stages\.a\.uses: unknown stage type 'nosuch'; expected one of: bon, evaluate, example.corpus"]),
    bad("unknown-param", {"a": {"uses": "example.corpus", "params": {"linez": 3}}},
        [r"stages\.a\.params\.linez: unknown field"]),
    bad("param-wrong-type", {"a": {"uses": "example.corpus", "params": {"lines": "many"}}},
        [r"stages\.a\.params\.lines: Input should be a valid integer.*\(got 'many'\)"]),
    bad("param-bool-for-int", {"a": {"uses": "example.corpus", "params": {"lines": True}}},
        [r"stages\.a\.params\.lines: expected a number, got the boolean true"]),
    bad("param-int-for-bool", {"a": {"uses": "sft", "params": {"lora": 1}}, },
        [r"stages\.a\.params\.lora: expected true or false, got 1"]),
    bad("param-infinite", {"a": {"uses": "example.count", "inputs": {"text": "b.out"}, "params": {"delay": INF}},
                           "b": OK}, [r"stages\.a\.params\.delay: Input should be a finite number"]),
    bad("param-out-of-range", {"a": {"uses": "example.corpus", "params": {"lines": 0}}},
        [r"stages\.a\.params\.lines: Input should be greater than or equal to 1"]),
    bad("timeout-infinite", {"a": {**OK, "timeout": INF}}, [r"stages\.a\.timeout: Input should be a finite number"]),
    bad("timeout-zero", {"a": {**OK, "timeout": 0}}, [r"stages\.a\.timeout: Input should be greater than 0"]),
    bad("retries-negative", {"a": {**OK, "retries": -1}},
        [r"stages\.a\.retries: Input should be greater than or equal to 0"]),
    bad("retries-bool", {"a": {**OK, "retries": True}}, [r"stages\.a\.retries: expected a number, got the boolean"]),
    bad("stage-seed-too-big", {"a": {**OK, "seed": 2**64}}, [r"stages\.a\.seed: Input should be less than or equal"]),
    bad("memory-zero", {"a": {**OK, "resources": {"memory": 0}}},
        [r"stages\.a\.resources\.memory: memory 0 must be more than 0 bytes"]),
    bad("memory-negative", {"a": {**OK, "resources": {"memory": "-1GB"}}},
        [r"stages\.a\.resources\.memory: memory '-1GB' is not a size"]),
    bad("memory-not-a-size", {"a": {**OK, "resources": {"memory": "lots"}}},
        [r"stages\.a\.resources\.memory: memory 'lots' is not a size; expected e\.g\. 512MB"]),
    bad("cpus-nan", {"a": {**OK, "resources": {"cpus": float("nan")}}},
        [r"stages\.a\.resources\.cpus: Input should be a finite number"]),
    bad("cpus-too-many", {"a": {**OK, "resources": {"cpus": 512}}},
        [r"stages\.a\.resources\.cpus: asks for 512 CPUs but this machine has \d+; lower it"]),
    bad("gpus-on-cpu-machine", {"a": {**OK, "resources": {"gpus": 1}}},
        [r"stages\.a\.resources\.gpus: asks for 1 GPU\(s\) but this machine has no GPU; set gpus: 0"]),
    bad("resources-unknown", {"a": {**OK, "resources": {"tpus": 1}}}, [r"stages\.a\.resources\.tpus: unknown field"]),
    bad("gate-malformed", {"a": {**OK, "gates": {"lines": "lots"}}},
        [r"stages\.a\.gates: gate 'lots' is not a comparison; expected OP NUMBER"]),
    bad("stage-name-too-long", {"s" * 101: OK},
        [r"stages\.s{101}: stage name is 101 characters; names become file names, keep them to at most 100"]),
    bad("stage-name-bad-chars", {"a b": OK}, [r"stages\.a b: stage name must match"]),
    bad("input-to-missing-stage", {"a": OK, "b": {"uses": "example.count", "inputs": {"text": "nope.out"}}},
        [r"stages\.b\.inputs\.text: 'nope.out' names no stage 'nope' and no file"]),
    bad("input-missing-output", {"a": OK, "b": {"uses": "example.count", "inputs": {"text": "a.missing"}}},
        [r"stages\.b\.inputs\.text: stage 'a' has no output 'missing'; it produces: out"]),
    bad("input-missing-required", {"b": {"uses": "example.count"}},
        [r"stages\.b\.inputs: missing required input 'text'"]),
    bad("input-unknown-name", {"a": OK, "b": {"uses": "example.count", "inputs": {"txt": "a.out"}}},
        [r"stages\.b\.inputs\.txt: stage type 'example.count' takes no input 'txt'; it takes: text"]),
    bad("input-missing-file", {"b": {"uses": "example.count", "inputs": {"text": "data/none.txt"}}},
        [r"stages\.b\.inputs\.text: no such file or directory '.*data/none.txt'"]),
    bad("cycle", {"a": {"uses": "example.count", "inputs": {"text": "b.out"}},
                  "b": {"uses": "example.count", "inputs": {"text": "a.out"}}},
        [r"stages form a cycle: a -> b -> a"]),
    bad("cross-field-check", {"a": {"uses": "ppo", "inputs": {"policy": "x.txt", "prompts": "x.txt"}}},
        [r"stages\.a\.inputs\.reward_model: give exactly one reward"]),
    # scaling out (alignpipe.distributed): the world must fit the machine, and a placement names the stage's models
    bad("world-larger-than-machine", {"a": {"uses": "sft", "inputs": {"model": "x.txt", "data": "x.txt"},
                                            "resources": {"procs_per_node": 64, "cpus": 1}}},
        [r"stages\.a\.resources\.procs_per_node: 64 processes × 1 CPUs need 64 CPUs on a node, which has \d+; lower "
         r"procs_per_node or cpus"]),
    bad("nodes-on-one-machine", {"a": {"uses": "sft", "inputs": {"model": "x.txt", "data": "x.txt"},
                                       "resources": {"nodes": 2}}},
        [r"stages\.a\.resources\.nodes: asks for 2 nodes but this machine is one node; lower nodes \(a Ray cluster "
         r"with more nodes runs it with --executor ray\)"]),
    bad("gpus-on-a-cpu-machine", {"a": {"uses": "sft", "inputs": {"model": "x.txt", "data": "x.txt"},
                                        "resources": {"procs_per_node": 2, "gpus": 1}}},
        [r"stages\.a\.resources\.gpus: asks for 1 GPU\(s\) but this machine has no GPU; set gpus: 0"]),
    bad("placement-names-a-missing-model",
        {"a": {"uses": "ppo", "inputs": {"policy": "x.txt", "prompts": "x.txt"},
               "params": {"reward_function": "alignpipe.task:gold_score"},
               "resources": {"procs_per_node": 2, "placement": [["actor", "critic"], ["reference", "reward_model"]]}}},
        [r"stages\.a\.resources\.placement: names 'reward_model', a model this stage does not have; it has: actor, "
         r"critic, reference"]),
    bad("placement-on-sft", {"a": {"uses": "sft", "inputs": {"model": "x.txt", "data": "x.txt"},
                                   "resources": {"placement": "split"}}},
        [r"stages\.a\.resources\.placement: stage type 'sft' places no models"]),
    bad("placement-unknown-layout", {"a": {"uses": "sft", "inputs": {"model": "x.txt", "data": "x.txt"},
                                           "resources": {"placement": "diagonal"}}},
        [r"stages\.a\.resources\.placement: placement 'diagonal': expected one of auto, colocated, "
         r"split, separate, offload"]),
    bad("fsdp-on-one-process", {"a": {"uses": "sft", "inputs": {"model": "x.txt", "data": "x.txt"},
                                      "resources": {"sharding": "fsdp"}}},
        [r"stages\.a\.resources\.sharding: fsdp shards the model over the stage's processes and it has one"]),
    bad("multi-process-generate", {"a": {"uses": "generate", "inputs": {"model": "x.txt", "prompts": "x.txt"},
                                         "resources": {"procs_per_node": 2}}},
        [r"stages\.a\.resources\.procs_per_node: stage type 'generate' runs in one process; set nodes: 1"]),
    Case("user-module-raises-at-import", ["run", "p.yaml"], 2,
         [r"stages\.a\.uses: module 'boom' \(stage type 'boom:f'\) raised ZeroDivisionError: division by zero "
          r"while importing, at .*boom\.py:1; fix the module"],
         setup=chain(write("boom.py", RAISES_AT_IMPORT), write("p.yaml", spec({"a": {"uses": "boom:f"}})))),
    Case("user-module-missing-function", ["run", "p.yaml"], 2,
         [r"stages\.a\.uses: module 'mod' has no function 'g' \(stage type 'mod:g'\)"],
         setup=chain(write("mod.py", "def f(ctx):\n    pass\n"), write("p.yaml", spec({"a": {"uses": "mod:g"}})))),
    Case("user-module-missing", ["run", "p.yaml"], 2, [r"stages\.a\.uses: cannot import module 'nomod'"],
         setup=write("p.yaml", spec({"a": {"uses": "nomod:f"}}))),
]


@pytest.mark.parametrize("case", CASES, ids=ids(CASES))
def test_bad_spec(case, tmp_path):
    run_case(case, tmp_path, {})
    assert not (tmp_path / "ws").exists(), "validation errors must not create the workspace"
