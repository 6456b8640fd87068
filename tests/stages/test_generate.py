"""generate stage: seeded determinism (also across a resume), sampling params honored, boundary checks."""

import json
from pathlib import Path

import pytest
from stage_util import crash_at_third_sampling_then_resume
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignpipe import api
from alignpipe.pipeline.errors import StageFailed

PROMPTS = ["Review of the lamp:", "Thoughts on the fan:", "My review of the pan:", "Review of the red mug:",
           "Customer review of the tent:", "Review of the drill:", "Thoughts on the clock:"]




@pytest.fixture
def prompts(tmp_path) -> Path:
    """A dataset directory holding one data file (as task.reviews writes them)."""
    d = tmp_path / "prompts"
    d.mkdir()
    (d / "data.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return d


def generate(model_dir, prompts_dir, out, seed=0, **params) -> dict:
    api.run_stage("generate", inputs={"model": str(model_dir), "prompts": str(prompts_dir)}, params=params,
                  out=out, seed=seed)
    return json.loads((out / "manifest.json").read_text())


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]


def test_same_seed_same_artifact_other_seed_other_samples(tiny_model_dirs, prompts, tmp_path):
    params = {"n": 2, "max_new_tokens": 8, "batch_size": 3}
    a = generate(tiny_model_dirs["gpt2"], prompts, tmp_path / "a", seed=1, **params)
    b = generate(tiny_model_dirs["gpt2"], prompts, tmp_path / "b", seed=1, **params)
    c = generate(tiny_model_dirs["gpt2"], prompts, tmp_path / "c", seed=2, **params)
    assert a["id"] == b["id"] != c["id"]
    rows = records(tmp_path / "a")
    assert [r["prompt"] for r in rows] == PROMPTS
    assert all(len(r["responses"]) == len(r["finished"]) == len(r["num_tokens"]) == 2 for r in rows)
    s = a["summary"]
    assert s["model"] == a["inputs"]["model"]["id"] and s["prompts"] == 7 and s["responses"] == 14
    assert s["sampling"] == {"n": 2, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 8, "seed": 1,
                             "batch_size": 3}
    lengths = [n for r in rows for n in r["num_tokens"]]
    assert s["mean_length"] == sum(lengths) / 14
    assert s["fraction_finished"] == sum(f for r in rows for f in r["finished"]) / 14


def test_max_new_tokens_caps_responses_and_unfinished_ones_hit_the_cap(tiny_model_dirs, prompts, tmp_path):
    generate(tiny_model_dirs["llama"], prompts, tmp_path / "out", n=3, max_new_tokens=4)
    rows = records(tmp_path / "out")
    for r in rows:
        for n, fin in zip(r["num_tokens"], r["finished"], strict=True):
            assert 1 <= n <= 4 and (fin or n == 4)
    assert any(not f for r in rows for f in r["finished"])  # a random model rarely stops within 4 tokens


def test_near_zero_temperature_samples_the_greedy_response(tiny_model_dirs, prompts, tmp_path):
    generate(tiny_model_dirs["llama"], prompts, tmp_path / "cold", n=3, temperature=1e-4, max_new_tokens=6)
    generate(tiny_model_dirs["llama"], prompts, tmp_path / "hot", n=3, temperature=3.0, max_new_tokens=6)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama"])
    tok = AutoTokenizer.from_pretrained(tiny_model_dirs["llama"])
    for r in records(tmp_path / "cold"):
        ids = tok(r["prompt"], return_tensors="pt")
        out = model.generate(**ids, do_sample=False, max_new_tokens=6, pad_token_id=tok.pad_token_id)
        assert r["responses"] == [tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)] * 3
    assert any(len(set(r["responses"])) > 1 for r in records(tmp_path / "hot"))


def test_interrupted_generation_resumes_to_the_same_artifact(tiny_model_dirs, prompts, tmp_path, monkeypatch):
    params = {"n": 2, "max_new_tokens": 6, "batch_size": 2, "checkpoint_every": 2}
    straight, resumed, calls = crash_at_third_sampling_then_resume(
        monkeypatch, lambda out: generate(tiny_model_dirs["gpt2"], prompts, out, **params), tmp_path)
    assert resumed == straight
    assert calls == 2  # 4 batches of 2 prompts: the first 2 came from the checkpoint


def test_chat_prompts_need_a_chat_template(tiny_model_dirs, tmp_path):
    data = tmp_path / "chat.jsonl"
    data.write_text(json.dumps({"prompt": [{"role": "user", "content": "Review the lamp."}]}) + "\n")
    with pytest.raises(StageFailed, match="holds chat conversations .* has no chat template"):
        generate(tiny_model_dirs["gpt2"], data, tmp_path / "out")


def test_prompts_too_long_for_the_model_are_skipped_then_refused(tiny_model_dirs, tmp_path):
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["Review of the lamp:", "word " * 60]))
    out = tmp_path / "out"
    generate(tiny_model_dirs["gpt2"], data, out, max_new_tokens=4, max_skip_fraction=0.5)
    assert json.loads((out / "manifest.json").read_text())["summary"]["skipped"]["by_reason"] == {"too_long": 1}
    with pytest.raises(StageFailed, match=r"record 1, field 'prompt': \d+ prompt tokens \+ max_new_tokens 4 exceed "
                                          r"the model's 64 positions"):
        generate(tiny_model_dirs["gpt2"], data, tmp_path / "strict", max_new_tokens=4)


def test_a_dataset_directory_with_two_data_files_is_ambiguous(tiny_model_dirs, prompts, tmp_path):
    (prompts / "more.jsonl").write_text(json.dumps({"prompt": "x"}) + "\n")
    with pytest.raises(StageFailed, match=r"input 'prompts' .* expected one data file .* found data.jsonl, "
                                          r"more.jsonl"):
        generate(tiny_model_dirs["gpt2"], prompts, tmp_path / "out")
