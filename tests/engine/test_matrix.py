"""Sweeps: matrix expansion as a pure function on literal specs, and as the runner sees it (one branch reruns)."""

import re

import pytest
from engine_util import cli, executed, rec, run

from alignpipe.api import Workspace
from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.fingerprint import derive_seed
from alignpipe.pipeline.matrix import expand_matrix, split_name, split_ref

PARAMS = {"ppo": {"kl_target", "lr", "rollouts"}, "evaluate": {"models"}, "sft": {"epochs"}}


def expand(stages, seed=0):
    return expand_matrix({"name": "p", "seed": seed, "stages": stages}, "p.yaml", PARAMS.get)["stages"]


def test_one_key_fans_out_into_named_branches_sharing_the_stage_seed():
    out = expand({"ppo": {"uses": "ppo", "params": {"rollouts": 8}, "matrix": {"kl_target": [1, 2.5]}}}, seed=3)
    assert out == {
        "ppo@kl_target=1": {"uses": "ppo", "params": {"rollouts": 8, "kl_target": 1}, "seed": derive_seed(3, "ppo"),
                            "inputs": {}},
        "ppo@kl_target=2.5": {"uses": "ppo", "params": {"rollouts": 8, "kl_target": 2.5},
                              "seed": derive_seed(3, "ppo"), "inputs": {}}}


def test_a_grid_is_the_product_first_key_slowest_and_seed_sets_the_stage_seed():
    out = expand({"ppo": {"uses": "ppo", "matrix": {"lr": [0.1, 0.2], "seed": [7, 8]}}})
    assert list(out) == ["ppo@lr=0.1,seed=7", "ppo@lr=0.1,seed=8", "ppo@lr=0.2,seed=7", "ppo@lr=0.2,seed=8"]
    assert out["ppo@lr=0.2,seed=8"]["seed"] == 8 and out["ppo@lr=0.2,seed=8"]["params"] == {"lr": 0.2}


def test_readers_fan_out_collect_or_pick_one_branch():
    out = expand({
        "sft": {"uses": "sft"},
        "ppo": {"uses": "ppo", "inputs": {"policy": "sft.model"}, "matrix": {"kl_target": [1, 2]}},
        "score": {"uses": "evaluate", "inputs": {"sft": "sft.model", "rlhf": "ppo.policy"}},
        "evaluate": {"uses": "evaluate", "inputs": {"sft": "sft.model", "rlhf": "ppo@*.policy"}},
        "one": {"uses": "evaluate", "inputs": {"rlhf": "ppo@kl_target=2.policy"}}})
    assert list(out) == ["sft", "ppo@kl_target=1", "ppo@kl_target=2", "score@kl_target=1", "score@kl_target=2",
                         "evaluate", "one"]
    assert out["ppo@kl_target=2"]["inputs"] == {"policy": "sft.model"}
    assert out["score@kl_target=2"]["inputs"] == {"sft": "sft.model", "rlhf": "ppo@kl_target=2.policy"}
    assert out["score@kl_target=2"]["seed"] == derive_seed(0, "score")
    assert out["evaluate"]["inputs"] == {"sft": "sft.model", "rlhf@kl_target=1": "ppo@kl_target=1.policy",
                                         "rlhf@kl_target=2": "ppo@kl_target=2.policy"}
    assert "seed" not in out["evaluate"] and out["one"]["inputs"] == {"rlhf": "ppo@kl_target=2.policy"}


def test_two_swept_inputs_pair_on_common_keys_and_multiply_the_others():
    stages = {"a": {"uses": "sft", "matrix": {"seed": [0, 1]}}, "b": {"uses": "sft", "matrix": {"seed": [0, 1]}},
              "c": {"uses": "sft", "matrix": {"epochs": [1, 2]}},
              "ab": {"uses": "evaluate", "inputs": {"x": "a.model", "y": "b.model"}},
              "ac": {"uses": "evaluate", "inputs": {"x": "a.model", "y": "c.model"}}}
    out = expand(stages)
    assert [n for n in out if n.startswith("ab")] == ["ab@seed=0", "ab@seed=1"]
    assert out["ab@seed=1"]["inputs"] == {"x": "a@seed=1.model", "y": "b@seed=1.model"}
    assert [n for n in out if n.startswith("ac")] == ["ac@seed=0,epochs=1", "ac@seed=0,epochs=2",
                                                     "ac@seed=1,epochs=1", "ac@seed=1,epochs=2"]


def test_a_fanned_out_reader_collects_the_branches_that_agree_with_its_own():
    out = expand({
        "reward": {"uses": "sft", "matrix": {"epochs": [1, 2]}},
        "ppo": {"uses": "ppo", "inputs": {"rm": "reward.model"}, "matrix": {"kl_target": [1, 4]}},
        "evaluate": {"uses": "evaluate", "inputs": {"rm": "reward.model", "rlhf": "ppo@*.policy"}}})
    assert [n for n in out if n.startswith("evaluate")] == ["evaluate@epochs=1", "evaluate@epochs=2"]
    assert out["evaluate@epochs=2"]["inputs"] == {
        "rm": "reward@epochs=2.model", "rlhf@kl_target=1": "ppo@kl_target=1,epochs=2.policy",
        "rlhf@kl_target=4": "ppo@kl_target=4,epochs=2.policy"}


def test_a_spec_without_matrix_comes_back_as_it_was():
    raw = {"name": "p", "stages": {"a": {"uses": "sft", "inputs": {"x": "hf:org/model@main"}}}}
    assert expand_matrix(raw, "p.yaml", PARAMS.get) is raw


@pytest.mark.parametrize(("stages", "message"), [
    ({"ppo": {"uses": "ppo", "matrix": {"kl_targt": [1, 2]}}},
     "p.yaml: stages.ppo.matrix.kl_targt: stage type 'ppo' has no param 'kl_targt'; did you mean 'kl_target'?"),
    ({"ppo": {"uses": "ppo", "matrix": {"zzz": [1]}}},
     "p.yaml: stages.ppo.matrix.zzz: stage type 'ppo' has no param 'zzz'; its params: kl_target, lr, rollouts"),
    ({"ppo": {"uses": "ppo", "matrix": {"kl_target": []}}},
     "p.yaml: stages.ppo.matrix.kl_target: empty list; give at least one value"),
    ({"ppo": {"uses": "ppo", "matrix": {"kl_target": 4}}},
     "p.yaml: stages.ppo.matrix.kl_target: expected a list of values, got 4; write [4] for one value"),
    ({"ppo": {"uses": "ppo", "matrix": {"kl_target": [1, 1.0, 1]}}},
     "p.yaml: stages.ppo.matrix.kl_target: value 1 is listed twice"),
    ({"ppo": {"uses": "ppo", "params": {"lr": 0.1}, "matrix": {"lr": [0.2]}}},
     "p.yaml: stages.ppo.matrix.lr: 'lr' is also set in params"),
    ({"ppo": {"uses": "ppo", "seed": 3, "matrix": {"seed": [1, 2]}}},
     "p.yaml: stages.ppo.matrix.seed: the stage sets seed: 3 too"),
    ({"ppo": {"uses": "ppo", "matrix": {"lr": ["a b"]}}},
     "p.yaml: stages.ppo.matrix.lr: 'a b' cannot name a branch"),
    ({"ppo": {"uses": "ppo", "matrix": []}}, "p.yaml: stages.ppo.matrix: expected a mapping of param -> list"),
    ({"sft": {"uses": "sft"}, "e": {"uses": "evaluate", "inputs": {"x": "sft@*.model"}}},
     "p.yaml: stages.e.inputs.x: sft@* collects the branches of a matrix, but stage 'sft' has none"),
    ({"a": {"uses": "sft", "matrix": {"seed": [0, 1]}}, "b": {"uses": "sft", "inputs": {"x": "a.model"},
                                                          "matrix": {"seed": [2]}}},
     "p.yaml: stages.b.matrix.seed: an input already sweeps 'seed'"),
], ids=["unknown-param", "unknown-param-no-match", "empty", "not-a-list", "duplicate", "also-in-params",
        "seed-twice", "unsafe-string", "not-a-mapping", "collect-without-matrix", "key-clash"])
def test_bad_matrices_are_named_errors(stages, message):
    with pytest.raises(UserError, match=re.escape(message)):
        expand(stages)


def test_names_and_references_split_literally():
    assert split_name("ppo@kl_target=2,seed=1") == ("ppo", {"kl_target": "2", "seed": "1"})
    assert split_name("ppo") == ("ppo", {})
    assert split_ref("ppo@lr=0.5.policy") == ("ppo@lr=0.5", "policy")
    assert split_ref("ppo@lr=0.5") == ("ppo@lr=0.5", "")
    assert split_ref("ppo.policy") == ("ppo", "policy") and split_ref("ppo") == ("ppo", "")


# ---------------------------------------------------------------------------------------------------------------
# through the runner


def sweep(tmp_path, values):
    m = tmp_path / "marker"
    return {"name": "sweep", "seed": 0, "workspace": str(tmp_path / "ws"), "stages": {
        "a": {"uses": "teststages:record", "params": {"marker": str(m)}, "matrix": {"value": values}},
        "b": rec(m, "b", inputs={"x": "a.out"}),
        "all": rec(m, "all", inputs={"x": "a@*.out"})}}


def test_changing_one_value_reruns_only_that_branch_and_what_reads_it(tmp_path):
    res, states = run(tmp_path, sweep(tmp_path, [1, 2, 3]))
    assert res.status == "done" and len(states) == 7
    assert executed(tmp_path) == sorted(["a@value=1", "a@value=2", "a@value=3", "b@value=1", "b@value=2",
                                         "b@value=3", "all"])
    res, states = run(tmp_path, sweep(tmp_path, [1, 2, 5]))
    assert executed(tmp_path) == ["a@value=5", "all", "b@value=5"]
    assert states["a@value=1"] == states["b@value=2"] == "cached"
    ws = Workspace(tmp_path / "ws")
    assert (ws.show("a@value=5").path / "value.txt").read_text() == "5"
    assert ws.show("b@value=2.out").producer["stage"] == "b@value=2"


def test_cli_refuses_bad_matrices_with_one_line_each(tmp_path, write_pipeline):
    p = write_pipeline({"name": "bad", "stages": {
        "corpus": {"uses": "example.corpus", "matrix": {"line": [10, 20]}},
        "words": {"uses": "example.count", "inputs": {"text": "corpus.out"}, "matrix": {"unit": []}}}})
    r = cli("validate", p)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: {p}: stages.corpus.matrix.line: stage type 'example.corpus' has no param 'line'; did you mean "
        "'lines'?",
        f"{p}: stages.words.matrix.unit: empty list; give at least one value (a list of one runs the stage once)"]


def test_a_three_seed_ppo_validates_into_branches_that_evaluate_collects():
    import yaml

    from alignpipe import api

    spec = yaml.safe_load(api.builtin_path("default").read_text())
    spec["stages"]["ppo"]["matrix"] = {"seed": [0, 1, 2]}
    spec["stages"]["evaluate"]["inputs"]["rlhf"] = "ppo@*.policy"
    pipe = api.from_dict(spec)
    assert [pipe.stages[f"ppo@seed={k}"].seed for k in range(3)] == [0, 1, 2]
    assert {k: str(v) for k, v in pipe.stages["evaluate"].inputs.items() if k.startswith("rlhf")} == {
        f"rlhf@seed={k}": f"ppo@seed={k}.policy" for k in range(3)}
    assert pipe.order[-1] == "evaluate" and pipe.stages["evaluate"].params.models == ["sft", "rlhf"]
