"""pretrain stage: a BPE tokenizer and a tiny causal LM from raw text, loadable with from_pretrained."""

import json
import math
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignpipe import api
from alignpipe.pipeline.errors import StageFailed, UserError

TINY = {"vocab_size": 300, "n_layer": 1, "n_embd": 32, "n_head": 2, "max_len": 48, "batch_size": 16, "lr": 3e-3,
        "warmup_steps": 2}




@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A dataset directory holding data.jsonl of {"text"} records (task.reviews' corpus layout)."""
    from alignpipe.task import make_corpus

    d = tmp_path_factory.mktemp("corpus")
    (d / "data.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in make_corpus(0, 200)))
    return d


def pretrain(corpus, out, seed=0, **params) -> dict:
    api.run_stage("pretrain", inputs={"corpus": str(corpus)}, params={**TINY, **params}, out=out, seed=seed)
    return json.loads((out / "manifest.json").read_text())


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_pretrain_builds_a_loadable_model_with_pad_distinct_from_eos(arch, corpus, tmp_path):
    m = pretrain(corpus, tmp_path / "base", arch=arch, steps=25)
    s = m["summary"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    tok = AutoTokenizer.from_pretrained(tmp_path / "base")
    assert model.config.model_type == arch and m["kind"] == "model"
    assert tok.pad_token_id not in (None, tok.eos_token_id) and model.config.pad_token_id == tok.pad_token_id
    assert len(tok) == s["vocab_size"] <= 300 and model.config.vocab_size == len(tok) and tok.chat_template
    assert s["steps"] == 25 and s["documents"] == {"train": 196, "eval": 4}
    assert s["eval_loss"] < math.log(len(tok)) - 1  # learned something beyond uniform
    assert s["parameters"] == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def test_same_seed_same_artifact_other_seed_other_artifact(corpus, tmp_path):
    a = pretrain(corpus, tmp_path / "a", steps=4, chat_template=False)
    b = pretrain(corpus, tmp_path / "b", steps=4, chat_template=False)
    c = pretrain(corpus, tmp_path / "c", steps=4, chat_template=False, seed=1)
    assert a["id"] == b["id"] != c["id"]
    assert AutoTokenizer.from_pretrained(tmp_path / "a").chat_template is None


def test_resume_from_a_checkpoint_gives_the_same_model(corpus, tmp_path, monkeypatch, capsys):
    import alignpipe.train

    straight = pretrain(corpus, tmp_path / "straight", steps=12, checkpoint_every=4)["id"]
    real, calls = alignpipe.train.optimizer_step, []

    def crash_at_step_10(loss, **kw):
        calls.append(1)
        if len(calls) == 10:
            raise KeyboardInterrupt("killed")
        return real(loss, **kw)

    monkeypatch.setattr("alignpipe.train.optimizer_step", crash_at_step_10)
    with pytest.raises(KeyboardInterrupt):
        pretrain(corpus, tmp_path / "resumed", steps=12, checkpoint_every=4)
    monkeypatch.setattr("alignpipe.train.optimizer_step", real)
    capsys.readouterr()
    assert pretrain(corpus, tmp_path / "resumed", steps=12, checkpoint_every=4)["id"] == straight
    assert "resuming from checkpoint step 8" in capsys.readouterr().err


def test_corpus_records_without_text_are_refused_past_the_threshold(tmp_path):
    data = tmp_path / "corpus.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in [{"text": "a b c"}] * 5 + [{"body": "x"}]))
    with pytest.raises(StageFailed, match=r"input 'corpus' .*record 5, field 'text': missing"):
        pretrain(data, tmp_path / "out", steps=1)


def test_bad_shapes_are_refused(corpus, tmp_path):
    with pytest.raises(UserError, match="n_embd: 30 is not divisible by n_head 4"):
        pretrain(corpus, tmp_path / "out", n_embd=30, n_head=4)
    with pytest.raises(UserError, match="vocab_size"):
        pretrain(corpus, tmp_path / "out", vocab_size=100)
