"""sft stage: memorizes demonstrations, LoRA merges into a plain HF dir, boundary checks, NaN guard, resume."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from stage_util import kill_at_first_checkpoint_then_rerun, manifest
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignpipe import api
from alignpipe.models.tokenizer import DEFAULT_CHAT_TEMPLATE
from alignpipe.pipeline.errors import StageFailed

DEMOS = [
    {"prompt": "Review of the lamp:", "completion": " It is great."},
    {"prompt": "Review of the mug:", "completion": " It broke after a week."},
    {"prompt": "Thoughts on the fan:", "completion": " It is too loud."},
    {"prompt": "My review of the pan:", "completion": " I love this pan."},
]




def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path



def run_sft(model_dir, data, out, **params):
    return api.run_stage("sft", inputs={"model": str(model_dir), "data": str(data)}, params=params, out=out)


def greedy(model, tok, prompt: str, n: int = 12) -> str:
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, do_sample=False, max_new_tokens=n, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_sft_memorizes_demonstrations_and_stops(arch, tiny_model_dirs, tmp_path):
    data = write_jsonl(tmp_path / "demos.jsonl", DEMOS)
    out = tmp_path / "sft"
    run_sft(tiny_model_dirs[arch], data, out, steps=120, batch_size=4, lr=1e-2, eval_fraction=0)
    s = manifest(out)["summary"]
    assert s["train_loss"] < 0.05 and s["eval_loss"] is None and s["examples"] == {"train": 4, "eval": 0}
    assert s["completion_only"] and s["skipped"]["skipped"] == 0 and s["steps"] == 120
    model, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    for d in DEMOS:  # greedy decoding reproduces the completion and then emits EOS (decoded away)
        assert greedy(model, tok, d["prompt"]) == d["completion"]


def test_use_chosen_trains_on_the_chosen_side_of_preference_pairs(tiny_model_dirs, tmp_path):
    pairs = [{"prompt": d["prompt"], "chosen": d["completion"], "rejected": " Meh."} for d in DEMOS]
    data = write_jsonl(tmp_path / "prefs.jsonl", pairs)
    with pytest.raises(StageFailed, match=r"not a demonstration.*set the sft stage's param `use: chosen`"):
        run_sft(tiny_model_dirs["gpt2"], data, tmp_path / "no", steps=1)
    out = tmp_path / "sft"
    run_sft(tiny_model_dirs["gpt2"], data, out, use="chosen", steps=120, batch_size=4, lr=1e-2, eval_fraction=0)
    model, tok = AutoModelForCausalLM.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    for d in DEMOS:  # the chosen responses were learned, the rejected ones not
        assert greedy(model, tok, d["prompt"]) == d["completion"]


def test_held_out_loss_drops_and_is_reported(tiny_model_dirs, tmp_path):
    from alignpipe.task import make_demonstrations

    data = write_jsonl(tmp_path / "demos.jsonl", make_demonstrations(0, 40))
    out = tmp_path / "sft"
    run_sft(tiny_model_dirs["gpt2"], data, out, steps=30, batch_size=8, lr=3e-3, eval_fraction=0.2)
    s = manifest(out)["summary"]
    assert s["examples"] == {"train": 32, "eval": 8}
    assert s["eval_loss"] < s["eval_loss_init"] and s["train_tokens"] > 0


def test_lora_sft_saves_a_plain_hf_directory(tiny_model_dirs, tmp_path):
    data = write_jsonl(tmp_path / "demos.jsonl", DEMOS)
    out = tmp_path / "sft-lora"
    run_sft(tiny_model_dirs["llama"], data, out, steps=10, batch_size=4, lr=1e-2, lora=True, lora_r=4,
            eval_fraction=0)
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").exists()
    assert manifest(out)["summary"]["lora"] is True
    tuned = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama"])
    assert not any("lora" in name for name in tuned.state_dict())
    assert tuned.state_dict().keys() == base.state_dict().keys()
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert changed and all("proj" in k for k in changed)  # only the LoRA-targeted projections moved


def test_pad_equal_to_eos_is_fixed_and_logged(pad_is_eos_model, tmp_path, capsys):
    data = write_jsonl(tmp_path / "demos.jsonl", DEMOS)
    out = tmp_path / "sft"
    run_sft(pad_is_eos_model, data, out, steps=2, batch_size=4, eval_fraction=0)
    assert "pad token was equal to eos (id 1); added pad token '<|pad|>' (id 2)" in capsys.readouterr().err
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.pad_token_id == 2 != tok.eos_token_id
    assert json.loads((out / "config.json").read_text())["pad_token_id"] == 2
    assert manifest(out)["summary"]["pad_token_added"] is True


CHAT = [{"messages": [{"role": "user", "content": "Review the lamp."}, {"role": "assistant", "content": "Great."}]},
        {"prompt": [{"role": "user", "content": "Review the mug."}], "completion": "Bad."}]


def test_chat_data_without_a_chat_template_is_refused(tiny_model_dirs, tmp_path):
    data = write_jsonl(tmp_path / "chat.jsonl", CHAT)
    with pytest.raises(StageFailed, match=r"input 'data' .* holds chat conversations \(record 0\) but the tokenizer "
                                          r"of input 'model' .* has no chat template .*field 'chat_template'"):
        run_sft(tiny_model_dirs["gpt2"], data, tmp_path / "out")


def test_chat_data_with_a_chat_template_trains_on_the_assistant_turn(tiny_model_dirs, tmp_path):
    d = tmp_path / "chat-model"
    shutil.copytree(tiny_model_dirs["llama"], d)
    tok = AutoTokenizer.from_pretrained(d)
    tok.chat_template = DEFAULT_CHAT_TEMPLATE
    tok.save_pretrained(d)
    out = tmp_path / "sft"
    run_sft(d, write_jsonl(tmp_path / "chat.jsonl", CHAT), out, steps=2, batch_size=2, eval_fraction=0)
    assert AutoTokenizer.from_pretrained(out).chat_template == DEFAULT_CHAT_TEMPLATE
    # both records train, and only their assistant turns (plus EOS) carry loss: 2 steps over both records
    from alignpipe.data.tokenize import encode_pair

    turns = [([{"role": "user", "content": "Review the lamp."}], "Great."),
             ([{"role": "user", "content": "Review the mug."}], "Bad.")]
    assistant_tokens = sum(len(encode_pair(tok, prompt, reply)[1]) for prompt, reply in turns)
    s = manifest(out)["summary"]
    assert s["examples"] == {"train": 2, "eval": 0} and s["skipped"]["skipped"] == 0
    assert s["train_tokens"] == 2 * assistant_tokens


def test_bad_records_are_skipped_and_counted_up_to_the_threshold(tiny_model_dirs, tmp_path):
    records = [*DEMOS * 3, {"prompt": "Review of the lamp:"}, {"prompt": "", "completion": " x"}]
    data = write_jsonl(tmp_path / "demos.jsonl", records)
    out = tmp_path / "sft"
    run_sft(tiny_model_dirs["gpt2"], data, out, steps=1, max_skip_fraction=0.2, eval_fraction=0)
    assert manifest(out)["summary"]["skipped"] == {"records": 14, "skipped": 2,
                                                   "by_reason": {"empty": 1, "missing_field": 1}}
    with pytest.raises(StageFailed, match=r"2 of 14 records skipped .* record 12, field 'completion': missing"):
        run_sft(tiny_model_dirs["gpt2"], data, tmp_path / "strict", steps=1)


def test_max_len_beyond_the_model_positions_is_refused(tiny_model_dirs, tmp_path):
    data = write_jsonl(tmp_path / "demos.jsonl", DEMOS)
    with pytest.raises(StageFailed, match=r"params.max_len=100 exceeds the 64 positions of input 'model'"):
        run_sft(tiny_model_dirs["gpt2"], data, tmp_path / "out", max_len=100)


def test_nan_loss_stops_the_stage_naming_the_step_and_keeping_the_checkpoint(tiny_model_dirs, tmp_path):
    data = write_jsonl(tmp_path / "demos.jsonl", DEMOS)
    out = tmp_path / "sft"
    with pytest.raises(StageFailed, match=r"(loss|gradient norm) is (NaN|inf) at step (\d+); stopped before the "
                                          r"optimizer applied it, the last good checkpoint \(step \d+\) is kept"):
        run_sft(tiny_model_dirs["gpt2"], data, out, lr=1e30, steps=20, batch_size=2, checkpoint_every=1,
                max_grad_norm=None, eval_fraction=0)
    assert list((tmp_path / "sft.work").glob("*/ckpt/step-*")) and not out.exists()


# -- resume ------------------------------------------------------------------------------------------------------

def test_sft_killed_and_resumed_equals_uninterrupted(tiny_model_dirs, tmp_path):
    from alignpipe.task import make_demonstrations

    data = write_jsonl(tmp_path / "demos.jsonl", make_demonstrations(1, 48))
    params = {"epochs": 8, "batch_size": 4, "lr": 3e-3, "warmup_steps": 5, "checkpoint_every": 10}
    run_sft(tiny_model_dirs["gpt2"], data, tmp_path / "straight", **params)
    args = ["sft", "-i", f"model={tiny_model_dirs['gpt2']}", "-i", f"data={data}",
            *(x for k, v in params.items() for x in ("-p", f"{k}={v}"))]
    assert kill_at_first_checkpoint_then_rerun(args, tmp_path / "resumed") == manifest(tmp_path / "straight")["id"]


def test_bf16_autocast_trains_and_saves_fp32_weights(tiny_model_dirs, tmp_path):
    from alignpipe.task import make_demonstrations

    data = write_jsonl(tmp_path / "demos.jsonl", make_demonstrations(0, 40))
    out = tmp_path / "sft"
    run_sft(tiny_model_dirs["gpt2"], data, out, steps=30, batch_size=8, lr=3e-3, eval_fraction=0.2, precision="bf16")
    s = manifest(out)["summary"]
    assert s["precision"] == "bf16" and s["eval_loss"] < s["eval_loss_init"]
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.float32
