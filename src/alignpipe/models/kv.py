"""Incremental decoding for the sampler: one call per generated token, with a KV cache preallocated for the whole
generation (B, H, P + T, D) and written in place.

Two implementations of one interface, `Stepper(ids (B, n), positions (B, n)) -> logits of the last column (B, V)`:

- `LeanStepper`, for GPT-2 and Llama models (the architectures alignpipe builds and tests): it runs the model's
  own submodules (embeddings, norms, projections, MLPs, LM head; LoRA layers that peft injected stay active) and
  does the attention itself, with an additive mask kept across steps. At the default size a sampling step is
  ~3 ms through transformers, about a third of it glue around the kernels (mask construction, cache objects,
  attention dispatch, output dataclasses); this runs the same kernels in ~2 ms (benchmarks/rl_step) and draws the
  same tokens (tests/models/test_forward.py).
- `HFStepper` for every other architecture: transformers' forward with a preallocated cache layer.
"""

from __future__ import annotations

import functools
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.cache_utils import Cache, DynamicLayer

from alignpipe.models.build import unwrap


class Stepper(Protocol):
    def __call__(self, ids: Tensor, positions: Tensor) -> Tensor:
        """The next n columns of every row: ids, positions (B, n) -> (B, V) logits of the last column.
        The first call is the (left-padded) prompt; each later call one token per row."""
        ...

    def keep(self, rows: Tensor) -> None:
        """Continue with these rows (b,) only, in this order: the cache and mask keep just them."""
        ...


def stepper(model: nn.Module, prompt_mask: Tensor, capacity: int) -> Stepper:
    """The fastest stepper for `model` (in eval mode, under no_grad): prompt_mask (B, P) marks real prompt tokens,
    capacity = P + the most new tokens."""
    lean = LeanStepper.supports(model)
    return LeanStepper(model, prompt_mask, capacity) if lean else HFStepper(model, prompt_mask, capacity)


class _PreallocatedLayer(DynamicLayer):
    """One layer's KV cache in buffers allocated once for the whole generation (B, H, P + T, D): each step writes
    its column in place and attention reads a view of the filled part. transformers' DynamicLayer grows by
    `torch.cat`, copying the whole cache every step (~20 % of a tiny model's generation time on CPU)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity, self.length = capacity, 0

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        b, h, _, _ = key_states.shape
        self._k = key_states.new_empty(b, h, self.capacity, key_states.shape[-1])
        self._v = value_states.new_empty(b, h, self.capacity, value_states.shape[-1])
        self.is_initialized = True

    def update(self, key_states: Tensor, value_states: Tensor, *_: object, **__: object) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start, self.length = self.length, self.length + key_states.shape[-2]
        self._k[:, :, start:self.length] = key_states
        self._v[:, :, start:self.length] = value_states
        self.keys, self.values = self._k[:, :, :self.length], self._v[:, :, :self.length]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def keep(self, rows: Tensor) -> None:
        if self.is_initialized:
            self._k, self._v = self._k[rows], self._v[rows]
            self.keys, self.values = self._k[:, :, :self.length], self._v[:, :, :self.length]


class HFStepper:
    """transformers' forward with `_PreallocatedLayer` caches and a (B, capacity) attention mask."""

    def __init__(self, model: nn.Module, prompt_mask: Tensor, capacity: int) -> None:
        self.model = model
        self.cache = Cache(layer_class_to_replicate=functools.partial(_PreallocatedLayer, capacity))
        self.mask = torch.ones(prompt_mask.shape[0], capacity, dtype=prompt_mask.dtype, device=prompt_mask.device)
        self.mask[:, : prompt_mask.shape[1]] = prompt_mask
        self.length = 0

    def keep(self, rows: Tensor) -> None:
        for layer in self.cache.layers:
            layer.keep(rows)
        self.mask = self.mask[rows]

    def __call__(self, ids: Tensor, positions: Tensor) -> Tensor:
        self.length += ids.shape[1]
        return self.model(input_ids=ids, attention_mask=self.mask[:, : self.length], position_ids=positions,
                          past_key_values=self.cache, use_cache=True, logits_to_keep=1).logits[:, -1]


class LeanStepper:
    """GPT-2 / Llama decoding on the model's submodules, attention by `scaled_dot_product_attention` on
    preallocated (layers, B, H_kv, capacity, D) key and value buffers."""

    @staticmethod
    def supports(model: nn.Module) -> bool:
        config = unwrap(model).config
        if config.model_type == "gpt2":
            return not (config.add_cross_attention or config.reorder_and_upcast_attn)
        return config.model_type == "llama"

    def __init__(self, model: nn.Module, prompt_mask: Tensor, capacity: int) -> None:
        base = unwrap(model)
        self.gpt2 = base.config.model_type == "gpt2"
        self.trunk = base.transformer if self.gpt2 else base.model
        self.layers = self.trunk.h if self.gpt2 else self.trunk.layers
        self.head = base.get_output_embeddings()
        first = self.layers[0].attn if self.gpt2 else self.layers[0].self_attn
        kv_heads = first.num_heads if self.gpt2 else base.config.num_key_value_heads
        b, p = prompt_mask.shape
        param = next(base.parameters())
        shape = (len(self.layers), b, kv_heads, capacity, first.head_dim)
        self.keys = torch.empty(shape, dtype=param.dtype, device=param.device)
        self.values = torch.empty(shape, dtype=param.dtype, device=param.device)
        # (B, 1, 1, capacity) additive: −inf on prompt pads; a pad query still sees itself (no all-masked row).
        self.bias = torch.zeros(b, 1, 1, capacity, dtype=param.dtype, device=param.device)
        self.bias[:, 0, 0, :p].masked_fill_(prompt_mask == 0, float("-inf"))
        self.length = 0

    def keep(self, rows: Tensor) -> None:
        self.keys, self.values, self.bias = self.keys[:, rows], self.values[:, rows], self.bias[rows]

    def __call__(self, ids: Tensor, positions: Tensor) -> Tensor:
        start, n = self.length, ids.shape[1]
        end = self.length = start + n
        mask = self.bias[..., :end]  # (B, 1, 1, end)
        if n > 1:  # the prompt: causal within it, and every query sees its own key
            causal = torch.full((n, end), float("-inf"), dtype=mask.dtype, device=mask.device).triu_(start + 1)
            mask = (mask + causal).diagonal_scatter(mask.new_zeros(mask.shape[0], 1, n), start, 2, 3)
        if self.gpt2:
            h = self.trunk.wte(ids) + self.trunk.wpe(positions)  # (B, n, d)
            rotary = None
        else:
            h = self.trunk.embed_tokens(ids)
            rotary = self.trunk.rotary_emb(h, positions)  # (cos, sin), (B, n, D) each
        for i, layer in enumerate(self.layers):
            if self.gpt2:
                h = h + self._gpt2_attention(i, layer.attn, layer.ln_1(h), mask, start, end)
                h = h + layer.mlp(layer.ln_2(h))
            else:
                h = h + self._llama_attention(i, layer.self_attn, layer.input_layernorm(h), mask, rotary, start, end)
                h = h + layer.mlp(layer.post_attention_layernorm(h))
        norm = self.trunk.ln_f if self.gpt2 else self.trunk.norm
        return self.head(norm(h[:, -1]))  # (B, V)

    def _attend(self, i: int, q: Tensor, k: Tensor, v: Tensor, mask: Tensor, start: int, end: int,
                scaling: float) -> Tensor:
        """q (B, H, n, D), this step's k, v (B, H_kv, n, D) -> (B, n, H·D), the cache written at start:end."""
        self.keys[i, :, :, start:end] = k
        self.values[i, :, :, start:end] = v
        out = F.scaled_dot_product_attention(q, self.keys[i, :, :, :end], self.values[i, :, :, :end], attn_mask=mask,
                                             scale=scaling, enable_gqa=q.shape[1] != k.shape[1])
        return out.transpose(1, 2).flatten(2)

    def _gpt2_attention(self, i: int, attn: nn.Module, x: Tensor, mask: Tensor, start: int, end: int) -> Tensor:
        b, n, _ = x.shape
        q, k, v = attn.c_attn(x).view(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        return attn.c_proj(self._attend(i, q, k, v, mask, start, end, attn.scaling))

    def _llama_attention(self, i: int, attn: nn.Module, x: Tensor, mask: Tensor, rotary: tuple[Tensor, Tensor],
                         start: int, end: int) -> Tensor:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        b, n, _ = x.shape
        q = attn.q_proj(x).view(b, n, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(b, n, -1, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(b, n, -1, attn.head_dim).transpose(1, 2)
        q, k = apply_rotary_pos_emb(q, k, *rotary)
        return attn.o_proj(self._attend(i, q, k, v, mask, start, end, attn.scaling))
