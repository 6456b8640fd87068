"""The evaluate stage: win rates and intervals on known answers, KL to the reference, the report artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignpipe import api
from alignpipe.pipeline.errors import StageFailed


def text_length(responses):
    """A gold function for tests: longer is better."""
    return [float(len(r)) for r in responses]




@pytest.fixture(scope="module")
def fx(tiny_model_dirs, tiny_rm_dir, eval_prompts_dir) -> dict[str, Path]:
    return {**tiny_model_dirs, "rm": tiny_rm_dir, "prompts": eval_prompts_dir}


def evaluate(out: Path, models: dict[str, Path], fx, **params) -> dict:
    inputs = {**{k: str(v) for k, v in models.items()}, "prompts": str(fx["prompts"]), "reward_model": str(fx["rm"])}
    api.run_stage("evaluate", inputs=inputs, params={"models": list(models), "max_new_tokens": 8,
                                                     "batch_size": 10, **params}, out=out)
    return json.loads((out / "metrics.json").read_text())


# -- statistics on known answers -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("successes", "n", "low", "high"), [
    (8, 10, 0.4902, 0.9433), (5, 10, 0.2366, 0.7634), (0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0),
], ids=["8-of-10", "5-of-10", "0-of-10", "10-of-10"])
def test_wilson_interval_matches_published_values(successes, n, low, high):
    from alignpipe.stages.evaluate import wilson_interval

    lo, hi = wilson_interval(successes, n)
    assert lo == pytest.approx(low, abs=1e-4) and hi == pytest.approx(high, abs=1e-4)


def test_win_rate_counts_ties_half_and_pairs_by_prompt():
    from alignpipe.stages.evaluate import win_rate

    model = [3, 3, 3, 3, 3, 3, 1, 1, 1, 1]
    baseline = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]  # 6 wins, 4 ties: 8 successes of 10
    r = win_rate(model, baseline)
    assert (r["wins"], r["ties"], r["losses"], r["n"]) == (6, 4, 0, 10)
    assert r["rate"] == 0.8 and r["ci_low"] == pytest.approx(0.4902, abs=1e-4)
    assert r["ci_high"] == pytest.approx(0.9433, abs=1e-4)
    assert win_rate(baseline, model)["rate"] == pytest.approx(0.2)  # swapping sides mirrors the rate
    with pytest.raises(ValueError, match="equally long"):
        win_rate([1.0], [1.0, 2.0])


def test_mean_stderr():
    from alignpipe.stages.evaluate import mean_stderr

    assert mean_stderr([1.0, 2.0, 3.0, 4.0]) == pytest.approx({"mean": 2.5, "stderr": 0.6454972})
    assert mean_stderr([7.0]) == {"mean": 7.0, "stderr": 0.0}


@pytest.mark.parametrize(("params", "inputs", "field"), [
    ({}, {"sft", "prompts"}, "inputs.rlhf"),
    ({"models": ["a", "a"]}, {"a", "prompts"}, "params.models"),
    ({"models": ["sft", "reference"]}, {"sft", "reference", "prompts"}, "params.models"),
    ({"models": ["sft"]}, {"sft"}, "inputs.prompts"),
    ({"models": ["sft"]}, {"sft", "prompts", "extra"}, "inputs.extra"),
], ids=["missing-model", "repeated", "reserved-name", "no-prompts", "unknown-input"])
def test_check_names_every_missing_or_unknown_input(params, inputs, field):
    from alignpipe.stages.evaluate import STAGE

    problems = STAGE.check(STAGE.parse_params(params), inputs)
    assert len(problems) == 1 and problems[0].startswith(field + ":"), problems


# -- the stage -----------------------------------------------------------------------------------------------------
def test_a_model_against_itself_ties_everywhere_with_zero_kl(fx, tmp_path):
    m = evaluate(tmp_path / "out", {"sft": fx["gpt2"], "rlhf": fx["gpt2"]}, fx,
                 gold_function="test_evaluate:text_length")
    sft, rlhf = m["models"]["sft"], m["models"]["rlhf"]
    n = m["prompts"]
    assert n == 24
    # common random numbers: the same model draws the same responses, so every pair is a tie
    assert rlhf["gold_win_rate"] == {**rlhf["gold_win_rate"], "rate": 0.5, "wins": 0, "ties": n, "losses": 0}
    assert rlhf["gold_win_rate"]["ci_low"] == pytest.approx(0.3143, abs=1e-4)  # Wilson(12 of 24)
    assert rlhf["rm_win_rate"]["ties"] == n
    assert sft["kl"] == rlhf["kl"] == {"mean": 0.0, "stderr": 0.0}
    assert sft["gold"] == rlhf["gold"] and sft["rm_score"] == rlhf["rm_score"]
    assert "gold_win_rate" not in sft and "rm_win_rate" not in sft  # the baseline is not compared to itself
    out = tmp_path / "out"
    rows = [json.loads(line) for line in (out / "responses.jsonl").read_text().splitlines()]
    assert len(rows) == n and rows[0]["sft"]["response"] == rows[0]["rlhf"]["response"]
    headline = json.loads((out / "manifest.json").read_text())["summary"]["headline"]
    assert headline.startswith("| model | gold | RM score | KL to sft (nats) | gold win rate vs sft [95% CI] |")
    assert "| rlhf |" in headline and "0.50 [0.31, 0.69]" in headline
    summary_md = (out / "summary.md").read_text()
    samples = summary_md.split("## Sample responses")[1].strip().splitlines()
    assert samples[0] == "| prompt | sft | rlhf |" and len(samples) == 2 + 5  # header, rule, 5 side-by-side rows


def test_kl_is_measured_against_the_reference_and_is_deterministic(fx, tmp_path):
    models = {"sft": fx["gpt2"], "other": fx["llama"]}
    a = evaluate(tmp_path / "a", models, fx)
    assert a["models"]["other"]["kl"]["mean"] > 0.01  # another random model: away from the baseline (k1 estimate)
    assert a["models"]["sft"]["kl"]["mean"] == 0.0
    assert "gold" not in a["models"]["other"] and "rm_win_rate" in a["models"]["other"]
    # an explicit reference: KL is now measured against `other`
    api.run_stage("evaluate", inputs={"sft": str(fx["gpt2"]), "other": str(fx["llama"]), "reference": str(fx["llama"]),
                                      "prompts": str(fx["prompts"])},
                  params={"models": ["sft", "other"], "max_new_tokens": 8, "batch_size": 10}, out=tmp_path / "c")
    c = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert c["reference"] == "reference" and c["models"]["other"]["kl"]["mean"] == 0.0
    assert c["models"]["sft"]["kl"]["mean"] > 0.01 and "rm_score" not in c["models"]["sft"]
    evaluate(tmp_path / "again", models, fx)
    ids = [json.loads((tmp_path / d / "manifest.json").read_text())["id"] for d in ("a", "again")]
    assert ids[0] == ids[1]


def test_a_collected_matrix_is_evaluated_branch_by_branch_with_mean_and_sd(fx, tmp_path):
    """`rlhf: ppo@*.policy` of a 3-seed matrix arrives as inputs rlhf@seed=0..2; params.models names the family."""
    from alignpipe.stages.evaluate import mean_sd, seed_groups

    branches = {"rlhf@seed=0": fx["gpt2"], "rlhf@seed=1": fx["llama"], "rlhf@seed=2": fx["gpt2"]}
    inputs = {"sft": str(fx["gpt2"]), **{k: str(v) for k, v in branches.items()}, "prompts": str(fx["prompts"]),
              "reward_model": str(fx["rm"])}
    api.run_stage("evaluate", inputs=inputs, params={"models": ["sft", "rlhf"], "max_new_tokens": 8,
                                                     "batch_size": 12, "gold_function": "test_evaluate:text_length"},
                  out=tmp_path / "out")
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert list(m["models"]) == ["rlhf@seed=0", "rlhf@seed=1", "rlhf@seed=2", "sft"] and m["baseline"] == "sft"
    group = m["groups"]["rlhf"]
    assert group["branches"] == list(branches)
    golds = [m["models"][b]["gold"]["mean"] for b in branches]
    assert group["gold"] == mean_sd(golds) and group["gold"]["sd"] > 0  # the llama branch differs
    assert group["kl"]["mean"] == pytest.approx(m["models"]["rlhf@seed=1"]["kl"]["mean"] / 3)  # gpt2 ≡ sft: KL 0
    assert mean_sd([1.0, 2.0, 3.0]) == {"mean": 2.0, "sd": 1.0} and mean_sd([4.0]) == {"mean": 4.0, "sd": 0.0}
    families = {"sft": ["sft"], "rlhf": ["rlhf@kl_target=1", "rlhf@kl_target=2,seed=0", "rlhf@kl_target=2,seed=1"]}
    assert seed_groups(families) == {"rlhf@kl_target=2": ["rlhf@kl_target=2,seed=0", "rlhf@kl_target=2,seed=1"]}
    headline = json.loads((tmp_path / "out" / "manifest.json").read_text())["summary"]["headline"]
    assert f"| rlhf | 3 | {group['gold']['mean']:.3f} ± {group['gold']['sd']:.3f} |" in headline
    from alignpipe.stages.evaluate import STAGE

    assert STAGE.check(STAGE.parse_params({}), {"sft", "rlhf@seed=0", "prompts"}) == []


def test_tokenizer_mismatch_is_refused(fx, tmp_path):
    from alignpipe.models.build import LMSpec, build_causal_lm, save_model
    from alignpipe.models.tokenizer import train_tokenizer

    other = train_tokenizer(["zebra yak xylophone quokka"] * 80, vocab_size=300)
    lm = save_model(build_causal_lm(LMSpec(n_layer=1, hidden=16, n_head=2, max_positions=64), other, seed=0), other,
                    tmp_path / "other")
    with pytest.raises(StageFailed, match=r"tokenizers of \"input 'sft' .* and \"input 'rlhf' .*other.* are "
                                          r"incompatible"):
        evaluate(tmp_path / "out", {"sft": fx["gpt2"], "rlhf": lm}, fx)
