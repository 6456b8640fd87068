"""The memory model: what a model takes on a device when trained, frozen, sharded or offloaded. Pure, torch-free.

Shapes are decoder-only transformers (GPT-2/OPT: LayerNorm, biases, GELU MLP, learned positions; Llama: RMSNorm,
no biases, SwiGLU MLP, rotary positions, grouped-query attention), from the catalog below (the public configs of
GPT-2 small, OPT-125m/350m/1.3b and Llama-2 7b/13b, LLaMA-30b, Llama-2-70b), from a HF config.json, or from the
pretrain stage's params. A model's bytes on one device, for Φ parameters sharded over n devices:

    weights      Φ·w / n         w = 2 (bf16) or 4 (fp32)
    gradients    Φ·g / n         trained models only; g = w
    optimizer    Φ·o / n         Adam: two fp32 moments, plus an fp32 master copy under bf16: o = 12 (bf16), 8 (fp32)
                                 (the ZeRO paper's 2 + 2 + 12 = 16 bytes per trained parameter); offloaded to host
                                 memory with the gradients (ZeRO-Offload); LoRA: only the adapters' (q and v)
    gathered     2 layers of w   FSDP/ZeRO-3 only: the current and the prefetched layer, unsharded, while they run
                 (+1 layer of g when trained: a layer's full gradient before its reduce-scatter)
    activations  t·L·a           trained models, t tokens per micro-batch, L layers, a bytes per token and layer:
                                 a = w·(6h + 2·kv + m·f), m = 3 (SwiGLU) or 2 (GELU): the layer and attention inputs,
                                 q, k, v, the attention output and the MLP intermediates, attention by a fused kernel
                                 that stores no t×t matrix (Korthikanti et al. 2022 count 34·h·w/2 with dropout masks)
                 t·(L·h·w + a)   with activation checkpointing: each layer's input, plus one layer recomputed
    logits       t·V·8           fp32 logits and their gradient (trained LM heads); t·V·4 for a frozen forward
    kv cache     2·L·kv·w per token of every sequence being generated (the PPO actor's rollouts)
    offloaded    a frozen model held and run in host memory (weights, activations, logits there; none on a GPU)
    runtime      per device: max(1 GiB, 5 %) on a GPU (CUDA context, NCCL buffers, allocator caching),
                 0.5 GiB for a CPU process (the interpreter, torch, transformers)

What this leaves out (so a plan is a lower bound): temporary buffers of single ops (the largest is usually the
logits' log-softmax, counted above), allocator fragmentation beyond the 5 %, and tensor or pipeline parallelism
(not planned: alignpipe shards with FSDP only).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

GiB = 1024**3
Head = Literal["lm", "scalar"]  # a causal LM's vocabulary head, or a reward/value model's scalar score head


@dataclass(frozen=True)
class ModelShape:
    """A decoder-only transformer's shape: enough to count its parameters, activations and KV cache."""

    name: str
    n_layer: int
    hidden: int
    n_head: int
    kv_heads: int
    ffn: int
    vocab: int
    max_positions: int
    gated_mlp: bool  # SwiGLU (Llama): three hidden×ffn matrices; GELU (GPT-2, OPT): two
    tied: bool  # the LM head is the embedding matrix
    learned_positions: bool  # a position embedding table (GPT-2, OPT); rotary (Llama) has none
    bias: bool  # linear biases and LayerNorm (GPT-2, OPT); none and RMSNorm (Llama)

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * (self.hidden // self.n_head)

    @property
    def layer_params(self) -> int:
        d, kv, f = self.hidden, self.kv_dim, self.ffn
        attention = 2 * d * d + 2 * d * kv + (2 * d + 2 * kv if self.bias else 0)  # q, o: d×d; k, v: d×kv
        mlp = (3 if self.gated_mlp else 2) * d * f + (f + d if self.bias else 0)
        norms = 4 * d if self.bias else 2 * d  # LayerNorm has a bias, RMSNorm only a scale
        return attention + mlp + norms

    def params(self, head: Head = "lm") -> int:
        """Parameters with an LM head, or as a reward/value model (the backbone and a hidden×1 score head)."""
        d = self.hidden
        embeddings = self.vocab * d + (self.max_positions * d if self.learned_positions else 0)
        top = (0 if self.tied else self.vocab * d) if head == "lm" else d
        return embeddings + self.n_layer * self.layer_params + (2 * d if self.bias else d) + top


def _gpt(name: str, n_layer: int, hidden: int, n_head: int, vocab: int, positions: int) -> ModelShape:
    return ModelShape(name, n_layer, hidden, n_head, n_head, 4 * hidden, vocab, positions, gated_mlp=False,
                      tied=True, learned_positions=True, bias=True)


def _opt(name: str, n_layer: int, hidden: int, n_head: int) -> ModelShape:
    return replace(_gpt(name, n_layer, hidden, n_head, 50272, 2048))


def _llama(name: str, n_layer: int, hidden: int, n_head: int, kv_heads: int, ffn: int,  # noqa: PLR0913
           vocab: int = 32000) -> ModelShape:
    return ModelShape(name, n_layer, hidden, n_head, kv_heads, ffn, vocab, 4096, gated_mlp=True, tied=False,
                      learned_positions=False, bias=False)


# The public configs (config.json on the Hugging Face hub) of the models the RLHF papers and frameworks train.
CATALOG: dict[str, ModelShape] = {s.name: s for s in (
    _gpt("124M", 12, 768, 12, 50257, 1024),  # gpt2 (small)
    _gpt("125M", 12, 768, 12, 50272, 2048),  # facebook/opt-125m
    _gpt("350M", 24, 1024, 16, 50272, 2048),  # facebook/opt-350m (its 512-wide embedding projection ignored)
    _gpt("1.3B", 24, 2048, 32, 50272, 2048),  # facebook/opt-1.3b
    _llama("7B", 32, 4096, 32, 32, 11008),  # meta-llama/Llama-2-7b-hf
    _llama("13B", 40, 5120, 40, 40, 13824),  # meta-llama/Llama-2-13b-hf
    _llama("30B", 60, 6656, 52, 52, 17920),  # huggyllama/llama-30b (LLaMA 33B)
    _llama("70B", 80, 8192, 64, 8, 28672),  # meta-llama/Llama-2-70b-hf (grouped-query attention, 8 KV heads)
)}
SIZES = tuple(CATALOG)
# the models the peers' published configurations train (docs/scaling.md), by their hub ids only
PEER_MODELS: dict[str, ModelShape] = {s.name: s for s in (
    _opt("facebook/opt-6.7b", 32, 4096, 32), _opt("facebook/opt-13b", 40, 5120, 40),
    _opt("facebook/opt-30b", 48, 7168, 56),
    _opt("facebook/opt-66b", 64, 9216, 72),
    _llama("meta-llama/Meta-Llama-3-8B", 32, 4096, 32, 8, 14336, 128256),
    _llama("Qwen/Qwen2-7B", 28, 3584, 28, 4, 18944, 152064),
    _llama("Qwen/Qwen2.5-14B", 48, 5120, 40, 8, 13824, 152064),
    _llama("Qwen/Qwen2-72B", 80, 8192, 64, 8, 29568, 152064),
)}
HUB_IDS = {"gpt2": "124M", "openai-community/gpt2": "124M", "facebook/opt-125m": "125M", "facebook/opt-350m": "350M",
           "facebook/opt-1.3b": "1.3B", "meta-llama/Llama-2-7b-hf": "7B", "meta-llama/Llama-2-13b-hf": "13B",
           "huggyllama/llama-30b": "30B", "meta-llama/Llama-2-70b-hf": "70B",
           **{name: name for name in PEER_MODELS}}  # `hf:` inputs the plan recognizes


def shape_named(name: str) -> ModelShape:
    """A catalog shape by name ('7B', '7b', '1.3B'), or a peer model's by hub id ('facebook/opt-13b')."""
    for key, shape in (*CATALOG.items(), *PEER_MODELS.items()):
        if key.lower() == name.strip().lower():
            return shape
    raise ValueError(f"unknown model size {name!r}; known: {', '.join(SIZES)}")


def lora_params(shape: ModelShape, rank: int) -> int:
    """Parameters of LoRA adapters of rank `rank` on every layer's query and value projections (peft's default
    targets for GPT-2, OPT and Llama, which alignpipe's `lora: true` uses)."""
    return shape.n_layer * rank * ((shape.hidden + shape.hidden) + (shape.hidden + shape.kv_dim))


def shape_from_config(config: dict[str, Any], name: str = "config") -> ModelShape:
    """The shape of a HF config.json (GPT-2, OPT, Llama and Llama-like: Mistral, Qwen2)."""
    kind = config.get("model_type")
    if kind == "gpt2":
        d, heads = config["n_embd"], config["n_head"]
        return ModelShape(name, config["n_layer"], d, heads, heads, config.get("n_inner") or 4 * d,
                          config["vocab_size"], config.get("n_positions", 1024), gated_mlp=False,
                          tied=config.get("tie_word_embeddings", True), learned_positions=True, bias=True)
    if kind == "opt":
        d = config["hidden_size"]
        return ModelShape(name, config["num_hidden_layers"], d, config["num_attention_heads"],
                          config["num_attention_heads"], config["ffn_dim"], config["vocab_size"],
                          config["max_position_embeddings"], gated_mlp=False,
                          tied=config.get("tie_word_embeddings", True), learned_positions=True, bias=True)
    if kind in ("llama", "mistral", "qwen2"):
        heads = config["num_attention_heads"]
        return ModelShape(name, config["num_hidden_layers"], config["hidden_size"], heads,
                          config.get("num_key_value_heads") or heads, config["intermediate_size"],
                          config["vocab_size"], config.get("max_position_embeddings", 2048), gated_mlp=True,
                          tied=config.get("tie_word_embeddings", False), learned_positions=False, bias=False)
    raise ValueError(f"{name}: model_type {kind!r} is not modeled (gpt2, opt, llama, mistral, qwen2 are)")


def shape_from_dir(path: str | Path) -> ModelShape:
    """The shape of a HF model directory (its config.json)."""
    config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    return shape_from_config(config, name=Path(path).name)


def shape_from_pretrain(params: Any) -> ModelShape:
    """The shape the pretrain stage builds from its params (models.build.LMSpec: tied embeddings)."""
    d, arch = params.n_embd, params.arch
    if arch == "gpt2":
        return replace(_gpt(f"pretrain {arch} {params.n_layer}×{d}", params.n_layer, d, params.n_head,
                            params.vocab_size, params.max_len))
    ffn = 64 * math.ceil(d * 8 / 3 / 64)
    return ModelShape(f"pretrain {arch} {params.n_layer}×{d}", params.n_layer, d, params.n_head, params.n_head, ffn,
                      params.vocab_size, params.max_len, gated_mlp=True, tied=True, learned_positions=False,
                      bias=False)


# ---------------------------------------------------------------------------------------------------------------
# bytes


@dataclass(frozen=True)
class Precision:
    name: str
    weight: int  # bytes per parameter of the weights a forward reads (and of activations)
    grad: int
    optimizer: int  # Adam per trained parameter: two fp32 moments, plus an fp32 master copy of 16-bit weights


BF16 = Precision("bf16", 2, 2, 12)
FP32 = Precision("fp32", 4, 4, 8)
PRECISIONS = {p.name: p for p in (BF16, FP32)}


@dataclass(frozen=True)
class Footprint:
    """Bytes on one device by part, and the bytes kept in host memory instead (offloaded)."""

    device: dict[str, int] = field(default_factory=dict)
    host: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.device.values())

    @property
    def host_total(self) -> int:
        return sum(self.host.values())

    def __add__(self, other: Footprint) -> Footprint:
        return Footprint(_merge(self.device, other.device), _merge(self.host, other.host))


def _merge(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in (*a, *(k for k in b if k not in a))}


def activation_bytes_per_token_layer(shape: ModelShape, precision: Precision) -> int:
    """a: the bytes a layer stores per token for the backward (see the module docstring)."""
    return precision.weight * (6 * shape.hidden + 2 * shape.kv_dim + (3 if shape.gated_mlp else 2) * shape.ffn)


def activations(shape: ModelShape, precision: Precision, tokens: int, checkpointing: bool) -> int:
    a = activation_bytes_per_token_layer(shape, precision)
    if checkpointing:
        return tokens * (shape.n_layer * shape.hidden * precision.weight + a)
    return tokens * shape.n_layer * a


def kv_cache(shape: ModelShape, precision: Precision, sequences: int, length: int) -> int:
    """Keys and values of every layer for `sequences` sequences of `length` tokens."""
    return 2 * shape.n_layer * shape.kv_dim * precision.weight * sequences * length


def _gathered(shape: ModelShape, precision: Precision, shard: int, trained: bool) -> int:
    if shard <= 1:
        return 0
    return shape.layer_params * (2 * precision.weight + (precision.grad if trained else 0))


def trained(  # noqa: PLR0913 — the model, how it is held, and the micro-batch it trains on
    shape: ModelShape, head: Head, precision: Precision, *, tokens: int, shard: int = 1,
    checkpointing: bool = False, offload_optimizer: bool = False, lora_rank: int = 0,
) -> Footprint:
    """A model trained with Adam on micro-batches of `tokens` tokens, sharded over `shard` devices (FSDP/ZeRO-3;
    1 = replicated as DDP holds it); with `offload_optimizer` the Adam state and the gradients it steps on live in
    host memory (ZeRO-Offload: a layer's gradient is on the device only while it is reduced and copied out);
    with `lora_rank` only LoRA adapters train (the weights are frozen: no gradients or Adam state for them)."""
    phi = shape.params(head)
    trainable = lora_params(shape, lora_rank) if lora_rank else phi
    optimizer = _ceil(trainable * precision.optimizer, shard)
    gradients = _ceil(trainable * precision.grad, shard)
    device = {"weights": _ceil(phi * precision.weight, shard) + (trainable * precision.weight if lora_rank else 0),
              "gradients": 0 if offload_optimizer else gradients, "optimizer": 0 if offload_optimizer else optimizer,
              "gathered": _gathered(shape, precision, shard, trained=True),
              "activations": activations(shape, precision, tokens, checkpointing),
              "logits": tokens * shape.vocab * 8 if head == "lm" else 0}
    return Footprint(device, {"gradients": gradients, "optimizer": optimizer} if offload_optimizer else {})


def frozen(shape: ModelShape, head: Head, precision: Precision, *, tokens: int, shard: int = 1,
           offload: bool = False) -> Footprint:
    """A frozen model (reference, reward model) running no-grad forwards over `tokens` tokens at a time: its
    weights sharded over `shard` devices, or (`offload`) held and run in host memory by the CPU — what alignpipe
    does with an offloaded model (DeepSpeed instead streams its weights into the GPU a layer at a time)."""
    weights = shape.params(head) * precision.weight
    parts = {"weights": _ceil(weights, 1 if offload else shard),
             "gathered": 0 if offload else _gathered(shape, precision, shard, trained=False),
             "activations": tokens * activation_bytes_per_token_layer(shape, precision),  # one layer's outputs
             "logits": tokens * shape.vocab * 4 if head == "lm" else 0}
    return Footprint({}, parts) if offload else Footprint(parts)


def runtime_reserve(device_memory: int, gpu: bool) -> int:
    """What a device's runtime takes before any tensor: see the module docstring."""
    return max(GiB, device_memory // 20) if gpu else GiB // 2


def _ceil(n: int, d: int) -> int:
    return -(-n // d)


# ---------------------------------------------------------------------------------------------------------------
# sizes as text


def gib(n: int | float) -> str:
    """Bytes in GiB with one decimal: the unit of the plan's tables (and of the spec's `memory: 80GB`)."""
    return f"{n / GiB:.1f} GiB"


def count(n: int) -> str:
    """A parameter count as 124M, 6.7B."""
    return f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.0f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"
