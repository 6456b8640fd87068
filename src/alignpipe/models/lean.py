"""GPT-2 and Llama as the pieces alignpipe's own forwards call, where transformers' forward does work the caller
does not need:

- decoding (`models.kv.LeanStepper`): one token per step, where the glue around the kernels (mask construction,
  cache objects, attention dispatch, output dataclasses) is a third of the step;
- forwards that read a few columns (`final_hidden`): log-probs and values read the response columns, a reward
  score one token per row, yet transformers runs the last layer's attention, output projection and MLP at every
  column. Here the last layer computes keys and values everywhere and the rest only where it is read — the same
  numbers (tests/models/test_lean.py): about −15 % for a reward model's scoring forward, −5 % for log-probs;
- reward-model training (`pair_scores`): a preference pair is one row — the prompt once, then the chosen and the
  rejected response, each seeing the prompt and itself but not the other — with the last layer at the two scored
  tokens only. transformers would run the prompt twice; ~1.5× the pairs/s (benchmarks/notes/reward.md).

All run the model's own submodules (embeddings, norms, projections, MLPs; LoRA layers that peft injected stay
active) and do the attention with `scaled_dot_product_attention`. Every other architecture keeps transformers'
forward (`supports`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignpipe.models.build import score_head, unwrap

PROMPT, CHOSEN, REJECTED, PAD = 0, 1, 2, 3  # PackedPairs.segments


def supports(model: nn.Module) -> bool:
    """Whether `LeanModel` runs this (possibly LoRA-wrapped) model: GPT-2 without cross-attention or upcast
    attention, and Llama."""
    config = unwrap(model).config
    if config.model_type == "gpt2":
        return not (config.add_cross_attention or config.reorder_and_upcast_attn)
    return config.model_type == "llama"


class LeanModel:
    """A GPT-2 or Llama model (causal LM or sequence classifier) as embedding, per-layer attention projections
    and MLP block, and final norm."""

    def __init__(self, model: nn.Module) -> None:
        base = unwrap(model)
        self.gpt2 = base.config.model_type == "gpt2"
        self.trunk = base.transformer if self.gpt2 else base.model
        self.layers = self.trunk.h if self.gpt2 else self.trunk.layers
        self.norm = self.trunk.ln_f if self.gpt2 else self.trunk.norm
        first = self.attention(0)
        self.kv_heads = first.num_heads if self.gpt2 else base.config.num_key_value_heads
        self.head_dim = first.head_dim
        param = next(base.parameters())
        self.dtype, self.device = param.dtype, param.device
        if not self.gpt2:
            from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

            self.rotate = apply_rotary_pos_emb

    def attention(self, i: int) -> nn.Module:
        return self.layers[i].attn if self.gpt2 else self.layers[i].self_attn

    def embed(self, ids: Tensor, positions: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """ids, positions (B, n) -> hidden (B, n, d) and, for Llama, the rotary (cos, sin) of the positions."""
        if self.gpt2:
            return self.trunk.drop(self.trunk.wte(ids) + self.trunk.wpe(positions)), None
        h = self.trunk.embed_tokens(ids)
        return h, self.trunk.rotary_emb(h, positions)

    def qkv(self, i: int, h: Tensor, rotary: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor, Tensor]:
        """Layer i's input h (B, n, d), normed here -> q (B, H, n, D), k, v (B, H_kv, n, D), rotated for Llama."""
        b, n, _ = h.shape
        layer, attn = self.layers[i], self.attention(i)
        if self.gpt2:
            q, k, v = attn.c_attn(layer.ln_1(h)).view(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
            return q, k, v
        x = layer.input_layernorm(h)
        q = attn.q_proj(x).view(b, n, -1, attn.head_dim).transpose(1, 2)
        k = attn.k_proj(x).view(b, n, -1, attn.head_dim).transpose(1, 2)
        v = attn.v_proj(x).view(b, n, -1, attn.head_dim).transpose(1, 2)
        q, k = self.rotate(q, k, *rotary)
        return q, k, v

    def attend(self, i: int, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        """Scaled dot-product attention of layer i with an additive (or boolean) mask, GQA and attention dropout
        in training: q (B, H, n, D) -> (B, n, H·D)."""
        attn = self.attention(i)
        p = (attn.attn_dropout.p if self.gpt2 else attn.attention_dropout) if attn.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, scale=attn.scaling,
                                             enable_gqa=q.shape[1] != k.shape[1])
        return out.transpose(1, 2).flatten(2)

    def residual(self, i: int, h: Tensor, attended: Tensor) -> Tensor:
        """h + layer i's attention output projection of `attended`, then + its MLP block: (..., d) -> (..., d)."""
        layer, attn = self.layers[i], self.attention(i)
        if self.gpt2:
            h = h + attn.resid_dropout(attn.c_proj(attended))
            return h + layer.mlp(layer.ln_2(h))
        h = h + attn.o_proj(attended)
        return h + layer.mlp(layer.post_attention_layernorm(h))


def padding_mask(attention_mask: Tensor) -> Tensor:
    """(B, n) 1 = real token -> (B, 1, n, n) boolean, True = may attend: causal over real keys, as transformers'
    mask; a query with no real key before it (a left pad, whose output no one reads) sees itself instead of
    nothing."""
    n = attention_mask.shape[1]
    causal = torch.ones(n, n, dtype=torch.bool, device=attention_mask.device).tril()
    allowed = causal & attention_mask[:, None, :].bool()
    allowed.diagonal(dim1=1, dim2=2).logical_or_(~allowed.any(-1))
    return allowed.unsqueeze(1)


def pick(x: Tensor, dim: int, cols: slice | Tensor) -> Tensor:
    """x's entries at the kept columns along `dim`: a slice (the same columns for every row, a view) or a (B, k)
    index per row (a gather, whose backward is a scatter-add)."""
    if isinstance(cols, slice):
        return x[(slice(None),) * dim + (cols,)]
    shape = list(x.shape)
    shape[dim] = cols.shape[1]
    view = [cols.shape[0]] + [1] * (x.dim() - 1)
    view[dim] = cols.shape[1]
    return torch.gather(x, dim, cols.view(view).expand(shape))


def final_hidden(model: nn.Module, ids: Tensor, positions: Tensor, mask: Tensor, cols: slice | Tensor) -> Tensor:
    """Final-norm hidden states of a GPT-2/Llama model (`supports`) at the columns the caller reads: (B, k, d).

    ids, positions (B, n); mask (B, 1, n, n) boolean (`padding_mask`, `PackedPairs.attention_mask`); cols a slice
    or (B, k) per row. Every layer but the last runs at every column; the last runs its attention queries, output
    projection and MLP only at `cols` — the same numbers as transformers' forward there (tests/models/test_lean.py),
    without the work on columns no one reads."""
    lean = LeanModel(model)
    h, rotary = lean.embed(ids, positions)  # (B, n, d)
    last = len(lean.layers) - 1
    for i in range(last):
        q, k, v = lean.qkv(i, h, rotary)
        h = lean.residual(i, h, lean.attend(i, q, k, v, mask))
    q, k, v = lean.qkv(last, h, rotary)
    attended = lean.attend(last, pick(q, 2, cols), k, v, pick(mask, 2, cols))  # (B, k, H·D)
    return lean.norm(lean.residual(last, pick(h, 1, cols), attended))


# -- preference pairs, one row each -----------------------------------------------------------------------------
@dataclass
class PackedPairs:
    """B preference pairs as B right-padded rows: prompt, chosen response, rejected response, pads.

    positions: the rejected response continues from the prompt's end, as if the chosen one were not there;
    segments: PROMPT / CHOSEN / REJECTED / PAD per column; chosen_last, rejected_last (B,): each response's last
    column, where its score is read."""

    input_ids: Tensor
    positions: Tensor
    segments: Tensor
    chosen_last: Tensor
    rejected_last: Tensor

    def to(self, device: torch.device) -> PackedPairs:
        """The same pairs on `device`."""
        return PackedPairs(*(t.to(device) for t in (self.input_ids, self.positions, self.segments, self.chosen_last,
                                                     self.rejected_last)))

    @property
    def tokens(self) -> int:
        """Real tokens in the batch (each prompt once)."""
        return int((self.segments != PAD).sum())

    def attention_mask(self) -> Tensor:
        """(B, 1, n, n) boolean, True = may attend: causal; a response sees the prompt and itself, never the other
        response; a pad sees itself (so no row is all masked)."""
        n = self.segments.shape[1]
        query, key = self.segments[:, :, None], self.segments[:, None, :]
        causal = torch.ones(n, n, dtype=torch.bool, device=self.segments.device).tril()
        allowed = causal & ((key == PROMPT) | (key == query))
        allowed.diagonal(dim1=1, dim2=2).fill_(True)
        return allowed.unsqueeze(1)


def pack_pairs(samples: list, pad_id: int) -> PackedPairs:
    """PreferenceSamples -> PackedPairs (width: the longest prompt + chosen + rejected)."""
    n = max(len(s.prompt_ids) + len(s.chosen_ids) + len(s.rejected_ids) for s in samples)
    b = len(samples)
    ids = torch.full((b, n), pad_id, dtype=torch.long)
    positions = torch.zeros(b, n, dtype=torch.long)
    segments = torch.full((b, n), PAD, dtype=torch.long)
    chosen_last, rejected_last = [], []
    for row, s in enumerate(samples):
        p, c, r = len(s.prompt_ids), len(s.chosen_ids), len(s.rejected_ids)
        ids[row, : p + c + r] = torch.tensor(s.prompt_ids + s.chosen_ids + s.rejected_ids)
        positions[row, : p + c] = torch.arange(p + c)
        positions[row, p + c : p + c + r] = torch.arange(p, p + r)
        segments[row, :p], segments[row, p : p + c], segments[row, p + c : p + c + r] = PROMPT, CHOSEN, REJECTED
        chosen_last.append(p + c - 1)
        rejected_last.append(p + c + r - 1)
    return PackedPairs(ids, positions, segments, torch.tensor(chosen_last), torch.tensor(rejected_last))


def pair_scores(rm: nn.Module, pairs: PackedPairs) -> tuple[Tensor, Tensor]:
    """A GPT-2/Llama reward model's scores of the chosen and of the rejected responses, (B,) each: equal to
    scoring prompt + chosen and prompt + rejected as separate rows (tests/models/test_lean.py), with each prompt
    computed once and the last layer's output projection and MLP run at the 2B pooled positions only."""
    cols = torch.stack([pairs.chosen_last, pairs.rejected_last], dim=1)  # (B, 2): two queries per row
    hidden = final_hidden(rm, pairs.input_ids, pairs.positions, pairs.attention_mask(), cols)  # (B, 2, d)
    scores = score_head(rm)(hidden).squeeze(-1).float()  # (B, 2)
    return scores[:, 0], scores[:, 1]
