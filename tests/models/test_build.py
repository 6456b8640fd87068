import math

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from alignpipe.models.build import (
    LMSpec,
    apply_lora,
    build_causal_lm,
    count_parameters,
    disable_dropout,
    fold_reward_normalization,
    load_causal_lm,
    load_reward_model,
    normalized_scores,
    reward_model_from_causal,
    reward_normalization,
    save_model,
    score_head,
    set_reward_normalization,
)
from alignpipe.models.forward import score_sequences

ARCHS = ["gpt2", "llama"]


@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_default_spec_is_about_one_million_parameters(arch, tiny_tokenizer):
    model = build_causal_lm(LMSpec(arch=arch), tiny_tokenizer, seed=0)
    assert 0.6e6 < count_parameters(model) < 1.2e6
    assert model.config.vocab_size == len(tiny_tokenizer)
    assert model.config.pad_token_id == tiny_tokenizer.pad_token_id != model.config.eos_token_id


def test_build_is_seeded_and_leaves_global_rng_alone(tiny_tokenizer):
    spec = LMSpec(n_layer=1, hidden=16, n_head=2, max_positions=16)
    state = torch.random.get_rng_state()
    a, b = build_causal_lm(spec, tiny_tokenizer, seed=3), build_causal_lm(spec, tiny_tokenizer, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_build_rejects_pad_equal_to_eos(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.pad_token = tok.eos_token
    with pytest.raises(ValueError, match="pad token distinct from eos"):
        build_causal_lm(LMSpec(), tok)


def _model_with_dropout(arch: str):
    torch.manual_seed(0)
    if arch == "gpt2":
        cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=32, vocab_size=50)  # dropouts default 0.1
        return GPT2LMHeadModel(cfg)
    cfg = LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                      vocab_size=50, attention_dropout=0.3)
    return LlamaForCausalLM(cfg)


@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_disable_dropout_makes_train_mode_forwards_bitwise_equal(arch, tmp_path):
    model = _model_with_dropout(arch).train()
    ids = torch.randint(0, 50, (2, 12))
    assert not torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)  # dropout is on
    disable_dropout(model)
    assert torch.equal(model(input_ids=ids).logits, model(input_ids=ids).logits)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).train()  # the config fields were zeroed too
    assert torch.equal(reloaded(input_ids=ids).logits, reloaded(input_ids=ids).logits)


@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_reward_model_from_causal(arch, tiny_model_dirs):
    rm = reward_model_from_causal(tiny_model_dirs[arch])
    lm = load_causal_lm(tiny_model_dirs[arch])
    assert rm.config.num_labels == 1 and rm.config.pad_token_id == lm.config.pad_token_id
    assert torch.equal(rm.get_input_embeddings().weight, lm.get_input_embeddings().weight)
    assert score_head(rm).weight.shape == (1, lm.config.hidden_size)
    assert not rm.training


def test_reward_head_init_std_is_one_over_sqrt_d_plus_one(tiny_tokenizer, tmp_path):
    d = 256
    spec = LMSpec(n_layer=1, hidden=d, n_head=4, max_positions=16)
    save_model(build_causal_lm(spec, tiny_tokenizer, seed=0), tiny_tokenizer, tmp_path)
    std = score_head(reward_model_from_causal(tmp_path)).weight.std().item()
    assert std == pytest.approx(1 / math.sqrt(d + 1), rel=0.25)  # 0.02 would be HF's default init


def test_load_reward_model_requires_pad_token_id(tiny_model_dirs, tmp_path):
    rm = reward_model_from_causal(tiny_model_dirs["gpt2"])
    rm.config.pad_token_id = None
    rm.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no pad_token_id"):
        load_reward_model(tmp_path)


def _perturb_lora(model) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                p.add_(0.1 * torch.randn_like(p))


@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_lora_merge_on_save_roundtrip_causal(arch, tiny_model_dirs, tiny_tokenizer, tmp_path):
    peft_model = apply_lora(load_causal_lm(tiny_model_dirs[arch]), r=4, alpha=8)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    _perturb_lora(peft_model)
    ids = torch.randint(0, len(tiny_tokenizer), (2, 10))
    with torch.no_grad():
        expected = peft_model(input_ids=ids).logits
    save_model(peft_model, tiny_tokenizer, tmp_path)
    assert not (tmp_path / "adapter_config.json").exists() and (tmp_path / "model.safetensors").exists()
    plain = AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits, expected, atol=1e-5, rtol=0)
        base = load_causal_lm(tiny_model_dirs[arch])(input_ids=ids).logits
    assert not torch.allclose(base, expected, atol=1e-4)  # the adapters did change the model
    assert hasattr(peft_model, "merge_and_unload")  # the caller's model is still wrapped


@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_lora_merge_on_save_roundtrip_reward_model(arch, tiny_model_dirs, tiny_tokenizer, tmp_path):
    peft_rm = apply_lora(reward_model_from_causal(tiny_model_dirs[arch]), r=4, alpha=8)
    assert any("score" in n and p.requires_grad for n, p in peft_rm.named_parameters())
    _perturb_lora(peft_rm)
    ids = torch.randint(4, len(tiny_tokenizer), (3, 9))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        expected = score_sequences(peft_rm, ids, mask)
        save_model(peft_rm, tiny_tokenizer, tmp_path)
        torch.testing.assert_close(score_sequences(load_reward_model(tmp_path), ids, mask), expected,
                                   atol=1e-5, rtol=0)


def test_reward_normalization_is_saved_with_the_model(tiny_model_dirs, tiny_tokenizer, tmp_path):
    rm = reward_model_from_causal(tiny_model_dirs["gpt2"])
    assert reward_normalization(rm) == (0.0, 1.0)
    raw = torch.tensor([1.0, 3.0, 5.0])
    set_reward_normalization(rm, bias=-raw.mean().item(), gain=1 / raw.std(unbiased=False).item())
    save_model(rm, tiny_tokenizer, tmp_path)
    normed = normalized_scores(load_reward_model(tmp_path), raw)
    assert abs(normed.mean().item()) < 1e-6 and abs(normed.std(unbiased=False).item() - 1) < 1e-6
    with pytest.raises(ValueError, match="gain must be > 0"):
        set_reward_normalization(rm, 0.0, gain=0.0)


@pytest.mark.parametrize("arch,lora", [("gpt2", False), ("llama", False), ("gpt2", True)],
                         ids=["gpt2", "llama", "gpt2-lora"])
def test_folded_normalization_makes_plain_hf_output_the_normalized_score(arch, lora, tiny_model_dirs, tiny_tokenizer,
                                                                          tmp_path):
    from transformers import AutoModelForSequenceClassification

    rm = reward_model_from_causal(tiny_model_dirs[arch])
    if lora:
        rm = apply_lora(rm, r=4, alpha=8)
        _perturb_lora(rm)
    set_reward_normalization(rm, bias=0.37, gain=2.5)
    ids = torch.randint(4, len(tiny_tokenizer), (3, 9))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        want = normalized_scores(rm, score_sequences(rm, ids, mask))  # S, as alignpipe computed it before
        folded = fold_reward_normalization(rm)
        save_model(rm, tiny_tokenizer, tmp_path)
        plain = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()  # what TRL or anyone loads
        raw = plain(input_ids=ids, attention_mask=mask).logits[:, 0]
    left = folded["offset_in_config"]
    if arch == "gpt2":  # the offset went into ln_f's bias: the plain output is S itself
        assert left == 0.0 and folded["offset"] == pytest.approx(2.5 * 0.37)
    else:  # Llama's RMSNorm has no bias: the gain is folded, the offset stays in config (S = raw + bias)
        assert left == pytest.approx(2.5 * 0.37) and folded["offset"] == 0.0
    torch.testing.assert_close(raw + left, want, atol=1e-5, rtol=1e-5)
    assert reward_normalization(load_reward_model(tmp_path)) == (pytest.approx(left), 1.0)
    torch.testing.assert_close(normalized_scores(plain, raw), want, atol=1e-5, rtol=1e-5)
