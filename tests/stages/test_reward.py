"""reward stage: overfits 8 pairs, normalizes πSFT samples to mean 0 / std 1, reports held-out metrics, resumes."""

import json
import math
import statistics
from pathlib import Path

import pytest
import torch
from stage_util import kill_at_first_checkpoint_then_rerun, manifest
from transformers import AutoModelForSequenceClassification

from alignpipe import api
from alignpipe.models.scoring import RewardScorer
from alignpipe.pipeline.errors import StageFailed

ITEMS = ("lamp", "mug", "fan", "pan", "clock", "tent", "drill", "kettle")
PAIRS = [{"prompt": f"Review of the {item}:", "chosen": " It is great. I love it.",
          "rejected": " It broke after a week."} if i % 2 else
         {"prompt": f"Thoughts on the {item}:", "chosen": " Highly recommend.", "rejected": " Do not buy it."}
         for i, item in enumerate(ITEMS)]




def write_prefs(tmp_path: Path, records, name="prefs") -> Path:
    """A preference dataset directory, as label writes it."""
    d = tmp_path / name
    d.mkdir()
    (d / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return d



def run_reward(model_dir, data, out, calibration=None, **params) -> dict:
    inputs = {"model": str(model_dir), "data": str(data)}
    if calibration is not None:
        inputs["calibration"] = str(calibration)
    api.run_stage("reward", inputs=inputs, params=params, out=out)
    return manifest(out)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_reward_model_overfits_eight_pairs(arch, tiny_model_dirs, tmp_path):
    out = tmp_path / "rm"
    s = run_reward(tiny_model_dirs[arch], write_prefs(tmp_path, PAIRS), out, steps=40, batch_size=8, lr=3e-3,
                   eval_fraction=0)["summary"]
    assert s["eval"] is None and s["pairs"] == {"train": 8, "eval": 0} and s["train_accuracy"] == 1.0
    rm = AutoModelForSequenceClassification.from_pretrained(out)  # a plain HF sequence classifier
    assert rm.config.num_labels == 1 and rm.config.pad_token_id != rm.config.eos_token_id
    scorer = RewardScorer(out)
    prompts = [p["prompt"] for p in PAIRS]
    chosen = scorer.score(prompts, [p["chosen"] for p in PAIRS])
    rejected = scorer.score(prompts, [p["rejected"] for p in PAIRS])
    assert all(c > r for c, r in zip(chosen, rejected, strict=True))  # accuracy 1


def test_normalization_makes_calibration_scores_mean_0_std_1(tiny_model_dirs, tmp_path):
    calibration = tmp_path / "cands"  # πSFT samples: a generate output
    api.run_stage("generate", inputs={"model": str(tiny_model_dirs["gpt2"]), "prompts": str(_prompts(tmp_path))},
                  params={"n": 3, "max_new_tokens": 10}, out=calibration)
    out = tmp_path / "rm"
    s = run_reward(tiny_model_dirs["gpt2"], write_prefs(tmp_path, PAIRS), out, calibration=calibration, steps=5,
                   eval_fraction=0.25)["summary"]
    norm = s["normalization"]
    assert norm["source"] == "calibration" and norm["responses"] == 3 * 6
    assert norm["sampler"] == manifest(calibration)["inputs"]["model"]["id"]
    rows = [json.loads(line) for line in (calibration / "candidates.jsonl").read_text().splitlines()]
    prompts = [r["prompt"] for r in rows for _ in r["responses"]]
    responses = [x for r in rows for x in r["responses"]]
    scorer = RewardScorer(out)
    scores = scorer.score(prompts, responses)
    assert abs(statistics.fmean(scores)) < 1e-5 and abs(statistics.pstdev(scores) - 1) < 1e-5
    assert norm["bias"] == -norm["raw_mean"] and norm["gain"] == pytest.approx(1 / norm["raw_std"])
    # folded on publish (GPT-2: gain and offset both): the plain HF output is the normalized score itself
    assert scorer.normalization == (0.0, 1.0)
    assert norm["folded"] == {"gain": norm["gain"], "offset": pytest.approx(norm["gain"] * norm["bias"]),
                              "offset_in_config": 0.0}
    assert scorer.score_raw(prompts, responses) == pytest.approx(scores, abs=1e-6)


def _prompts(tmp_path: Path) -> Path:
    from alignpipe.task import make_prompts

    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in make_prompts(0, 6, "pref")))
    return path


def test_without_calibration_the_preference_responses_are_centered(tiny_model_dirs, tmp_path):
    out = tmp_path / "rm"
    s = run_reward(tiny_model_dirs["llama"], write_prefs(tmp_path, [*PAIRS, PAIRS[0]]), out, steps=3,
                   normalize_std=False, eval_fraction=0.25)["summary"]
    norm = s["normalization"]
    assert norm["source"] == "preference responses" and norm["responses"] == 16  # distinct (prompt, response)
    assert norm["gain"] == 1.0 and norm["raw_std"] > 0
    prompts = [p["prompt"] for p in PAIRS for _ in range(2)]
    scores = RewardScorer(out).score(prompts, [r for p in PAIRS for r in (p["chosen"], p["rejected"])])
    assert abs(statistics.fmean(scores)) < 1e-5 and statistics.pstdev(scores) == pytest.approx(norm["raw_std"])


def test_held_out_metrics_and_label_ceiling_are_reported(tiny_model_dirs, tmp_path):
    from alignpipe.task import make_demonstrations

    demos = make_demonstrations(0, 24)
    candidates = tmp_path / "cands"
    candidates.mkdir()
    (candidates / "candidates.jsonl").write_text("".join(
        json.dumps({"prompt": d["prompt"], "responses": [d["completion"], demos[i - 1]["completion"]]}) + "\n"
        for i, d in enumerate(demos)))
    prefs = tmp_path / "prefs"
    api.run_stage("label", inputs={"candidates": str(candidates)}, params={"noise_temperature": 0.3}, out=prefs)
    s = run_reward(tiny_model_dirs["gpt2"], prefs, tmp_path / "rm", steps=4, eval_fraction=0.25)["summary"]
    ev = s["eval"]
    assert s["pairs"]["eval"] == ev["pairs"] == 6 and s["eval_accuracy"] == ev["accuracy"]
    assert 0 <= ev["accuracy"] <= 1 and ev["loss"] > 0
    assert sum(ev["margin"]["histogram"].values()) == 6
    assert ev["margin"]["mean"] == pytest.approx(ev["mean_chosen"] - ev["mean_rejected"])
    bins = ev["calibration"]["bins"]
    assert sum(b["count"] for b in bins) == 6  # every held-out pair in one bin; its accuracy agrees with eval's
    assert sum(b["accuracy"] * b["count"] for b in bins if b["count"]) / 6 == pytest.approx(ev["accuracy"])
    assert s["label_ceiling_accuracy"] == manifest(prefs)["summary"]["ceiling_accuracy"]


def test_a_reward_artifact_serves_as_label_judge(tiny_model_dirs, tmp_path):
    rm = tmp_path / "rm"
    run_reward(tiny_model_dirs["gpt2"], write_prefs(tmp_path, PAIRS), rm, steps=2, eval_fraction=0)
    candidates = tmp_path / "cands"
    candidates.mkdir()
    (candidates / "candidates.jsonl").write_text(json.dumps({"prompt": "Review of the lamp:",
                                                             "responses": [" Great.", " Bad."]}) + "\n")
    prefs = tmp_path / "labeled"
    api.run_stage("label", inputs={"candidates": str(candidates), "reward_model": str(rm)},
                  params={"judge": "reward_model"}, out=prefs)
    (row,) = [json.loads(line) for line in (prefs / "preferences.jsonl").read_text().splitlines()]
    great, bad = RewardScorer(rm).score(["Review of the lamp:"] * 2, [" Great.", " Bad."])  # the RM's own verdict
    assert great != bad
    assert (row["chosen"], row["rejected"]) == ((" Great.", " Bad.") if great > bad else (" Bad.", " Great."))
    assert row["chosen_score"] == pytest.approx(max(great, bad))
    assert row["rejected_score"] == pytest.approx(min(great, bad))


def test_lora_reward_model_saves_a_plain_sequence_classifier(tiny_model_dirs, tmp_path):
    out = tmp_path / "rm"
    run_reward(tiny_model_dirs["llama"], write_prefs(tmp_path, PAIRS), out, steps=3, lora=True, lora_r=4,
               eval_fraction=0)
    assert not (out / "adapter_config.json").exists()
    rm = AutoModelForSequenceClassification.from_pretrained(out)
    assert not any("lora" in k or "modules_to_save" in k for k in rm.state_dict())
    assert "alignpipe_reward_normalization" in json.loads((out / "config.json").read_text())


def test_a_backbone_with_pad_equal_to_eos_gets_a_pad_token(pad_is_eos_model, tmp_path, capsys):
    from transformers import AutoTokenizer

    out = tmp_path / "rm"
    s = run_reward(pad_is_eos_model, write_prefs(tmp_path, PAIRS), out, steps=2, eval_fraction=0)["summary"]
    assert s["pad_token_added"] and "pad token was equal to eos" in capsys.readouterr().err
    assert AutoTokenizer.from_pretrained(out).pad_token_id == 2
    assert AutoModelForSequenceClassification.from_pretrained(out).config.pad_token_id == 2


def test_missing_fields_are_named(tiny_model_dirs, tmp_path):
    data = write_prefs(tmp_path, [{"prompt": "a", "chosen": " b"}] * 3)
    with pytest.raises(StageFailed, match=r"input 'data' .*record 0, field 'rejected': missing"):
        run_reward(tiny_model_dirs["gpt2"], data, tmp_path / "rm")


def test_calibration_must_be_candidates(tiny_model_dirs, tmp_path):
    cal = tmp_path / "cal.jsonl"
    cal.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n")
    with pytest.raises(StageFailed, match=r"input 'calibration' .* record 0 needs fields 'prompt' and a list "
                                          r"'responses'"):
        run_reward(tiny_model_dirs["gpt2"], write_prefs(tmp_path, PAIRS), tmp_path / "rm", calibration=cal)


def test_reward_killed_and_resumed_equals_uninterrupted(tiny_model_dirs, tmp_path):
    pairs = [{**p, "prompt": f"{p['prompt']} #{k}"} for k in range(4) for p in PAIRS]
    data = write_prefs(tmp_path, pairs)
    params = {"epochs": 12, "batch_size": 4, "lr": 1e-3, "checkpoint_every": 10, "eval_fraction": 0.25}
    run_reward(tiny_model_dirs["llama"], data, tmp_path / "straight", **params)
    args = ["reward", "-i", f"model={tiny_model_dirs['llama']}", "-i", f"data={data}",
            *(x for k, v in params.items() for x in ("-p", f"{k}={v}"))]
    assert kill_at_first_checkpoint_then_rerun(args, tmp_path / "resumed") == manifest(tmp_path / "straight")["id"]




def test_bf16_autocast_reward_model_still_separates_pairs(tiny_model_dirs, tmp_path):
    out = tmp_path / "rm"
    s = run_reward(tiny_model_dirs["gpt2"], write_prefs(tmp_path, PAIRS), out, steps=40, batch_size=8, lr=3e-3,
                   eval_fraction=0, precision="bf16")["summary"]
    assert s["precision"] == "bf16" and s["train_accuracy"] == 1.0
    assert AutoModelForSequenceClassification.from_pretrained(out).dtype == torch.float32


def test_calibration_bins_on_literal_margins():
    from alignpipe.stages.reward import calibration_bins

    # raw margins r_w − r_l: 0 → P ½ (a tie, right ½); ±ln 3 → P ¾ (one right, one wrong); ln 19 → P 0.95, right
    out = calibration_bins([0.0, math.log(3), -math.log(3), math.log(19)])
    bins = out["bins"]
    assert bins[0] == {"p_mean": 0.5, "accuracy": 0.5, "count": 1}
    assert bins[1]["count"] == bins[3]["count"] == 0 and bins[1]["p_mean"] is None
    assert bins[2]["count"] == 2 and bins[2]["accuracy"] == 0.5 and bins[2]["p_mean"] == pytest.approx(0.75)
    assert bins[4]["count"] == 1 and bins[4]["accuracy"] == 1.0 and bins[4]["p_mean"] == pytest.approx(0.95)
    assert out["ece"] == pytest.approx(2 / 4 * 0.25 + 1 / 4 * 0.05)
