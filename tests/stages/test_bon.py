"""bon stage: the best of n by Rφ on known records, the KL bound, a real run on tiny models, resume."""

from __future__ import annotations

import json
import math

import pytest
from stage_util import crash_at_third_sampling_then_resume, manifest

from alignpipe import api


def test_kl_bound_on_literals():
    from alignpipe.stages.bon import kl_bound

    assert kl_bound(1) == 0.0
    assert kl_bound(2) == pytest.approx(math.log(2) - 0.5)
    assert kl_bound(64) == pytest.approx(math.log(64) - 63 / 64)


def test_best_record_keeps_the_first_highest_score_and_summarize_pairs_the_gains():
    from alignpipe.stages.bon import best_record, summarize

    r = best_record("q", ["a", "b", "c"], [0.5, 2.0, 2.0], [0.1, 0.9, 0.3], [True, False, True], [3, 4, 5])
    assert (r["response"], r["index"], r["rm_score"], r["gold"], r["finished"], r["num_tokens"]) == \
        ("b", 1, 2.0, 0.9, False, 4)
    other = best_record("p", ["x", "y", "z"], [1.0, 0.0, -1.0], [0.0, 0.3, 0.6], [True] * 3, [2, 2, 2])
    s = summarize([r, other], 3)
    assert s["rm_score"]["mean"] == pytest.approx(1.5) and s["rm_score_all"]["mean"] == pytest.approx(0.75)
    assert s["gold"]["mean"] == pytest.approx(0.45) and s["gold_all"]["mean"] == pytest.approx((1.3 / 3 + 0.3) / 2)
    assert s["kl_bound"] == pytest.approx(math.log(3) - 2 / 3) and s["fraction_finished"] == 0.5
    assert s["headline"].startswith("best-of-3: RM 1.500 ± 0.500 (all samples 0.750), gold 0.450 ± 0.450")
    assert "gold" not in summarize([best_record("q", ["a"], [1.0], None, [True], [1])], 1)


def bon(tiny_model_dirs, rm, prompts, out, **params) -> dict:
    api.run_stage("bon", inputs={"policy": str(tiny_model_dirs["gpt2"]), "reward_model": str(rm),
                                 "prompts": str(prompts)},
                  params={"max_new_tokens": 6, "gold_function": "scorers:length", **params}, out=out)
    return manifest(out)


def test_each_prompt_keeps_its_best_sample_and_n_1_is_the_policy(tiny_model_dirs, tiny_rm_dir, eval_prompts_dir,
                                                                 tmp_path):
    m = bon(tiny_model_dirs, tiny_rm_dir, eval_prompts_dir, tmp_path / "b4", n=4, batch_rows=16)
    rows = [json.loads(line) for line in (tmp_path / "b4" / "responses.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and all(len(r["rm_scores"]) == len(r["golds"]) == 4 for r in rows)
    assert all(r["rm_score"] == max(r["rm_scores"]) == r["rm_scores"][r["index"]] for r in rows)
    assert all(r["gold"] == float(len(r["response"])) for r in rows)  # scorers:length of the kept response
    s = m["summary"]
    assert s["n"] == 4 and s["rm_score"]["mean"] > s["rm_score_all"]["mean"]  # selection raises the proxy
    assert s["kl_bound"] == pytest.approx(math.log(4) - 0.75) and m["producer"]["uses"] == "bon"
    one = bon(tiny_model_dirs, tiny_rm_dir, eval_prompts_dir, tmp_path / "b1", n=1)["summary"]
    assert one["rm_score"] == one["rm_score_all"] and one["kl_bound"] == 0.0


def test_interrupted_bon_resumes_to_the_same_artifact(tiny_model_dirs, tiny_rm_dir, eval_prompts_dir, tmp_path,
                                                      monkeypatch):
    params = {"n": 2, "batch_rows": 12, "checkpoint_every": 6, "max_prompts": 24}  # 4 batches of 6 prompts
    straight, resumed, calls = crash_at_third_sampling_then_resume(
        monkeypatch, lambda out: bon(tiny_model_dirs, tiny_rm_dir, eval_prompts_dir, out, **params), tmp_path)
    assert resumed == straight
    assert calls == 2  # the first two batches came from the checkpoint
