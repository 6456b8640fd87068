"""The memory model on literal values: parameter counts of the public configs, bytes per part."""

import pytest

from alignpipe.distributed.memory import (
    BF16,
    CATALOG,
    FP32,
    GiB,
    activation_bytes_per_token_layer,
    frozen,
    kv_cache,
    lora_params,
    shape_from_config,
    shape_from_dir,
    shape_named,
    trained,
)

# parameters of the Hugging Face models the catalog copies (their model cards / sum(p.numel()))
PUBLISHED = {"124M": 124_439_808, "7B": 6_738_415_616, "13B": 13_015_864_320, "70B": 68_976_648_192}


@pytest.mark.parametrize("size", PUBLISHED)
def test_catalog_parameter_counts_are_the_published_ones(size):
    assert CATALOG[size].params() == PUBLISHED[size]


def test_scalar_head_replaces_an_untied_lm_head():
    s = shape_named("7B")
    assert s.params() - s.params("scalar") == s.vocab * s.hidden - s.hidden  # the 32000×4096 head, plus 4096


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_shape_from_a_real_config_counts_the_real_models_parameters(tiny_model_dirs, arch):
    from alignpipe.models.build import count_parameters, load_causal_lm

    model = load_causal_lm(tiny_model_dirs[arch])
    assert shape_from_dir(tiny_model_dirs[arch]).params() == count_parameters(model)


def test_trained_bytes_16_per_parameter_under_bf16_and_fp32():
    s = shape_named("1.3B")
    phi = s.params()
    for precision in (BF16, FP32):
        fp = trained(s, "lm", precision, tokens=0)
        assert fp.device["weights"] + fp.device["gradients"] + fp.device["optimizer"] == 16 * phi


def test_sharding_divides_the_state_and_adds_two_gathered_layers():
    s = shape_named("7B")
    one, eight = trained(s, "lm", BF16, tokens=0), trained(s, "lm", BF16, tokens=0, shard=8)
    assert eight.device["optimizer"] == -(-one.device["optimizer"] // 8)
    assert eight.device["gathered"] == s.layer_params * (2 * 2 + 2) and one.device["gathered"] == 0


def test_optimizer_offload_moves_adam_and_gradients_to_host():
    fp = trained(shape_named("7B"), "lm", BF16, tokens=0, offload_optimizer=True)
    phi = shape_named("7B").params()
    assert fp.device["optimizer"] == fp.device["gradients"] == 0
    assert fp.host == {"gradients": 2 * phi, "optimizer": 12 * phi}


def test_lora_trains_only_the_adapters():
    s = shape_named("7B")  # rank 8 on q and v of 32 layers: 32 · 8 · (2·4096 + 4096 + 4096) = 4,194,304
    assert lora_params(s, 8) == 4_194_304
    fp = trained(s, "lm", BF16, tokens=0, lora_rank=8)
    assert fp.device["weights"] == 2 * s.params() + 2 * 4_194_304
    assert fp.device["gradients"] == 2 * 4_194_304 and fp.device["optimizer"] == 12 * 4_194_304


def test_activations_literal_and_checkpointing():
    s = shape_named("124M")  # 6h + 2kv + 2f = 6·768 + 2·768 + 2·3072 = 12288 elements per token and layer
    assert activation_bytes_per_token_layer(s, BF16) == 2 * 12288
    full = trained(s, "lm", BF16, tokens=1000).device["activations"]
    ckpt = trained(s, "lm", BF16, tokens=1000, checkpointing=True).device["activations"]
    assert full == 1000 * 12 * 2 * 12288
    assert ckpt == 1000 * (12 * 768 * 2 + 2 * 12288)


def test_kv_cache_of_llama2_70b_uses_its_8_kv_heads():
    s = shape_named("70B")  # 8 kv heads × 128 = 1024 wide: 2 · 80 · 1024 · 2 bytes = 320 KiB per token
    assert kv_cache(s, BF16, sequences=1, length=1) == 327_680
    assert kv_cache(shape_named("7B"), BF16, 1, 1) == 2 * 32 * 4096 * 2


def test_frozen_offloaded_runs_in_host_memory():
    s = shape_named("13B")
    held = frozen(s, "lm", BF16, tokens=100)
    away = frozen(s, "lm", BF16, tokens=100, offload=True)
    assert held.device["weights"] == 2 * s.params() and away.total == 0
    assert away.host == held.device  # the same bytes, in host memory
    assert held.total > 24 * GiB


def test_peer_models_by_hub_id():
    assert round(shape_named("facebook/opt-66b").params() / 1e9, 1) == 65.7  # OPT-66B's 65.7B
    assert round(shape_named("Qwen/Qwen2-7B").params() / 1e9, 2) == 7.62  # Qwen2-7B's 7.62B (untied, vocab 152064)


def test_unknown_configs_and_sizes_are_refused():
    with pytest.raises(ValueError, match="model_type 'bert' is not modeled"):
        shape_from_config({"model_type": "bert"})
    with pytest.raises(ValueError, match="unknown model size '8B'; known: 124M"):
        shape_named("8B")
