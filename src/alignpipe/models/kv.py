"""Incremental decoding for the sampler: one call per generated token, with a KV cache preallocated for the whole
generation (B, H, P + T, D) and written in place.

Two implementations of one interface, `Stepper(ids (B, n), positions (B, n)) -> logits of the last column (B, V)`:

- `LeanStepper`, for GPT-2 and Llama models (the architectures alignpipe builds and tests): it runs the model's
  own submodules (`models.lean.LeanModel`: embeddings, norms, projections, MLPs, LM head; LoRA layers that peft
  injected stay active) and does the attention itself, with an additive mask kept across steps. At the default
  size a sampling step is ~3 ms through transformers, about a third of it glue around the kernels (mask
  construction, cache objects, attention dispatch, output dataclasses); this runs the same kernels in ~2 ms
  (benchmarks/rl_step) and draws the same tokens (tests/models/test_forward.py).
- `HFStepper` for every other architecture: transformers' forward with a preallocated cache layer.
"""

from __future__ import annotations

import functools
from typing import Protocol

import torch
from torch import Tensor, nn
from transformers.cache_utils import Cache, DynamicLayer

from alignpipe.models import lean
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
    cls = LeanStepper if lean.supports(model) else HFStepper
    return cls(model, prompt_mask, capacity)


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
    """GPT-2 / Llama decoding on `models.lean.LeanModel`, attention on preallocated (layers, B, H_kv, capacity, D)
    key and value buffers."""

    def __init__(self, model: nn.Module, prompt_mask: Tensor, capacity: int) -> None:
        self.lean = lean.LeanModel(model)
        self.head = unwrap(model).get_output_embeddings()
        b, p = prompt_mask.shape
        shape = (len(self.lean.layers), b, self.lean.kv_heads, capacity, self.lean.head_dim)
        self.keys = torch.empty(shape, dtype=self.lean.dtype, device=self.lean.device)
        self.values = torch.empty(shape, dtype=self.lean.dtype, device=self.lean.device)
        # (B, 1, 1, capacity) additive: −inf on prompt pads; a pad query still sees itself (no all-masked row).
        self.bias = torch.zeros(b, 1, 1, capacity, dtype=self.lean.dtype, device=self.lean.device)
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
        h, rotary = self.lean.embed(ids, positions)  # (B, n, d)
        for i in range(len(self.lean.layers)):
            q, k, v = self.lean.qkv(i, h, rotary)
            self.keys[i, :, :, start:end] = k
            self.values[i, :, :, start:end] = v
            attended = self.lean.attend(i, q, self.keys[i, :, :, :end], self.values[i, :, :, :end], mask)
            h = self.lean.residual(i, h, attended)
        return self.head(self.lean.norm(h[:, -1]))  # (B, V)
