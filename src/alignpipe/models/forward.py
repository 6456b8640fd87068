"""Tensor plumbing shared by sft, reward, ppo and evaluate: collation, masked forwards, sampling.

Layout (PPO.md items 1-4): a batch is `input_ids = [left-padded prompt | response right-padded with pad]`
of shape (B, P + T). Response token i sits at column P + i; its logprob and the value V_i (the value before
emitting it) come from column P − 1 + i. Every training/scoring forward passes
position_ids = cumsum(mask) − 1, so a left-padded row sees the same positions as the row alone; the sampler
continues each row's count. Masks are built from positions (prompt padding, first
EOS), never from `ids != pad`, so a sampled pad id inside a response is still a real token.

Shapes: B batch rows, P prompt columns, T response columns, L = P + T, V vocabulary, d hidden size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from alignpipe.models import lean
from alignpipe.models.build import score_head, unwrap
from alignpipe.models.kv import stepper


# -- collation --------------------------------------------------------------------------------------------------
def pad_left(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Left-pad token lists -> (ids (B, P), mask (B, P)), P the longest length."""
    if not seqs:
        raise ValueError("pad_left needs at least one sequence")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, P)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)  # (B, P)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s):] = torch.as_tensor(s, dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids, mask


def pad_right(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad token lists -> (ids (B, T), mask (B, T)), T the longest length (at least 1)."""
    if not seqs:
        raise ValueError("pad_right needs at least one sequence")
    width = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)  # (B, T)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


def eos_mask(response_ids: Tensor, eos_id: int) -> Tensor:
    """(B, T) -> (B, T) long: 1 up to and including the first EOS, 0 after it; all 1 for a row without EOS."""
    is_eos = (response_ids == eos_id).long()  # (B, T)
    eos_before = torch.cumsum(is_eos, dim=1) - is_eos  # (B, T) number of EOS strictly before each column
    return (eos_before == 0).long()


def position_ids_from_mask(mask: Tensor) -> Tensor:
    """(B, L) attention mask -> (B, L) positions: cumsum(mask) − 1, clamped at 0 on left pads (item 3)."""
    return (torch.cumsum(mask, dim=1) - 1).clamp(min=0)


def last_token_index(mask: Tensor) -> Tensor:
    """(B, L) mask -> (B,) column of the last 1 in each row (the EOS of a finished response)."""
    width = mask.shape[1]
    return width - 1 - torch.argmax(mask.flip(1).long(), dim=1)


@dataclass
class PromptResponseBatch:
    """Left-padded prompts and right-padded responses of the same B rows."""

    prompt_ids: Tensor  # (B, P) left-padded with pad
    prompt_mask: Tensor  # (B, P)
    response_ids: Tensor  # (B, T) pad after the first EOS
    response_mask: Tensor  # (B, T) 1 through the first EOS (all real tokens if none)
    sampler_logprobs: Tensor | None = None  # (B, T) log π(y_t) as the sampler saw it (only if requested)

    @property
    def prompt_len(self) -> int:
        return self.prompt_ids.shape[1]

    @property
    def input_ids(self) -> Tensor:  # (B, P + T)
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> Tensor:  # (B, P + T)
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)

    def ended(self, eos_id: int) -> Tensor:
        """(B,) bool: the response emitted EOS."""
        return ((self.response_ids == eos_id) & (self.response_mask == 1)).any(dim=1)

    def responses(self) -> list[list[int]]:
        """Each response's real tokens (through the first EOS), as lists."""
        return [row[m.bool()].tolist() for row, m in zip(self.response_ids, self.response_mask, strict=True)]

    def select(self, rows: Tensor) -> PromptResponseBatch:
        """Rows `rows` (b,) with only the columns some of them use: leading prompt columns that are pad in every
        selected row and response columns past their longest response are cut. Exact: cut columns are masked
        out of attention and position ids come from the mask (item 3)."""
        lead = int((self.prompt_mask[rows] == 0).long().cumprod(1).sum(1).min())  # all-pad prompt prefix
        used = max(1, int(self.response_mask[rows].sum(1).max()))
        logp = self.sampler_logprobs[rows, :used] if self.sampler_logprobs is not None else None
        return PromptResponseBatch(self.prompt_ids[rows, lead:], self.prompt_mask[rows, lead:],
                                   self.response_ids[rows, :used], self.response_mask[rows, :used], logp)

    def map_by_length(self, fn: Callable[[PromptResponseBatch], tuple[Tensor, ...]], rows_per_chunk: int = 16
                      ) -> tuple[Tensor, ...]:
        """fn over chunks of ~rows_per_chunk rows of similar length (each `select`ed), reassembled in row order:
        outputs (b,) stay per row, (b, t) are zero-padded back to (B, T). For no-grad forwards over a rollout
        batch, whose longest response sets T for every row: on the default task this skips ~40 % of the columns.
        Per-row results do not depend on the other rows of a chunk beyond float rounding (item 3)."""
        b, t = self.response_ids.shape
        lengths = self.prompt_mask.sum(1) + self.response_mask.sum(1)  # (B,)
        order = torch.sort(lengths, stable=True).indices
        outs: list[Tensor] | None = None
        for chunk in torch.tensor_split(order, max(1, b // rows_per_chunk)):
            part = fn(self.select(chunk))
            if outs is None:
                outs = [x.new_zeros((b, t) if x.dim() == 2 else (b,)) for x in part]
            for out, x in zip(outs, part, strict=True):
                if x.dim() == 2:
                    out[chunk, : x.shape[1]] = x
                else:
                    out[chunk] = x
        return tuple(outs or ())


def collate_prompt_response(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int
) -> PromptResponseBatch:
    """Token lists -> a PromptResponseBatch (responses should end with EOS where they ended)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    prompt_ids, prompt_mask = pad_left(prompts, pad_id)
    response_ids, response_mask = pad_right(responses, pad_id)
    return PromptResponseBatch(prompt_ids, prompt_mask, response_ids, response_mask)


# -- kernels ----------------------------------------------------------------------------------------------------
def use_fused_kernels(model: nn.Module) -> nn.Module:
    """Swap transformers' NewGELUActivation (GPT-2's `gelu_new`: the tanh-approximate GELU written as eight
    elementwise ops, each a pass over the (B, L, 4d) MLP activations forward and again backward) for torch's
    fused kernel of the same function, nn.GELU(approximate="tanh") (transformers' `gelu_pytorch_tanh`).
    Equal to float rounding (|Δ| < 1e-6); weights and config are untouched, so a saved model is the same HF
    model. About 10 % of a tiny GPT-2's CPU training step. Returns `model`, changed in place."""
    from transformers.activations import NewGELUActivation

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, NewGELUActivation):
                setattr(module, name, nn.GELU(approximate="tanh"))
    return model


# -- forwards ---------------------------------------------------------------------------------------------------
@contextmanager
def lm_head_pre_hook(model: nn.Module, hook: Callable[[nn.Module, tuple], tuple | None]) -> Iterator[None]:
    """`hook` as a forward pre-hook on the (possibly LoRA-wrapped) model's LM head for the duration: it sees
    (and may replace) the final hidden states the head is applied to."""
    handle = unwrap(model).get_output_embeddings().register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def check_ids_in_vocab(model: nn.Module, input_ids: Tensor) -> None:
    """Raise if an id is negative or ≥ the model's embedding rows (an opaque index error or device assert
    otherwise)."""
    rows = model.get_input_embeddings().num_embeddings
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= rows:
        raise ValueError(
            f"token id {hi if hi >= rows else lo} is outside the model's vocabulary (0..{rows - 1}); "
            "the tokenizer and model do not match (check_tokenizers_compatible / ensure_pad_token)"
        )


def response_logprobs(  # noqa: PLR0913 — the forward's inputs plus two switches
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, prompt_len: int, temperature: float = 1.0,
    entropy: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Per-token logprobs and entropies of the response under softmax(logits/τ) (items 4, 6).

    input_ids, attention_mask: (B, L) with L = prompt_len + T. Returns (logprobs (B, T), entropy (B, T)), or
    (logprobs, None) with entropy=False: logit − logsumexp, without materializing the (B, T, V) log-softmax
    (for no-grad recomputes that only need the logprobs). Values on masked response columns are meaningless,
    callers multiply by the response mask.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    check_ids_in_vocab(model, input_ids)
    n_resp = input_ids.shape[1] - prompt_len  # T
    if prompt_len < 1 or n_resp < 1:
        width = input_ids.shape[1]
        raise ValueError(f"need prompt_len ≥ 1 and a response column; got prompt_len {prompt_len}, width {width}")
    positions = position_ids_from_mask(attention_mask)
    if lean.supports(model):  # the last layer only at columns P−1 … L−1, the ones the LM head reads
        hidden = lean.final_hidden(model, input_ids, positions, lean.padding_mask(attention_mask),
                                   slice(prompt_len - 1, None))
        logits = unwrap(model).get_output_embeddings()(hidden)
    else:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                       logits_to_keep=n_resp + 1, use_cache=False).logits  # columns P−1 … L−1
    logits = logits[:, :-1, :].float() / temperature  # (B, T, V) column P−1+i predicts response token i
    targets = input_ids[:, prompt_len:].unsqueeze(-1)  # (B, T, 1)
    if not entropy:
        return (torch.gather(logits, 2, targets) - torch.logsumexp(logits, dim=-1, keepdim=True)).squeeze(-1), None
    logp_all = F.log_softmax(logits, dim=-1)  # (B, T, V)
    logprobs = torch.gather(logp_all, 2, targets).squeeze(-1)  # (B, T)
    return logprobs, -(logp_all.exp() * logp_all).sum(-1)  # (B, T) each


def _token_scores(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, cols: slice | Tensor,
                  right_padded: bool = False) -> Tensor:
    """A *ForSequenceClassification model's head outputs at the columns the caller reads: cols a slice, or (B, k)
    per row -> (B, k) float.

    GPT-2/Llama (`lean.supports`) run their last layer only at those columns (models.lean.final_hidden); other
    architectures run transformers' backbone. right_padded: every row's real tokens are a prefix of it, so causal
    attention alone is exact for every real token (pads only follow them): transformers gets an all-ones mask and
    takes its causal path instead of building a (B, 1, L, L) padding mask (~11 % faster reward training steps)."""
    check_ids_in_vocab(model, input_ids)
    head, base = score_head(model), unwrap(model)
    if right_padded and not torch.equal(attention_mask.cumprod(1), attention_mask):
        raise ValueError("right_padded rows must have their real tokens first (mask 1…1 0…0)")
    if lean.supports(model):
        hidden = lean.final_hidden(model, input_ids, position_ids_from_mask(attention_mask),
                                   lean.padding_mask(attention_mask), cols)
    else:
        kwargs = ({"attention_mask": torch.ones_like(attention_mask)} if right_padded  # positions: an arange
                  else {"attention_mask": attention_mask, "position_ids": position_ids_from_mask(attention_mask)})
        hidden = base.base_model(input_ids=input_ids, use_cache=False, **kwargs).last_hidden_state  # (B, L, d)
        hidden = lean.pick(hidden, 1, cols)
    return head(hidden).squeeze(-1).float()


def score_sequences(rm: nn.Module, input_ids: Tensor, attention_mask: Tensor, right_padded: bool = False) -> Tensor:
    """Reward-model score at each row's last non-pad token (item 22): (B, L), (B, L) -> (B,).

    Pools explicitly by the mask; HF's pooling looks for the first pad id and breaks on left padding.
    right_padded: rows are real tokens then pads (see _token_scores), e.g. `data.tokenize.preference_rows`.
    """
    last = last_token_index(attention_mask)[:, None]  # (B, 1)
    return _token_scores(rm, input_ids, attention_mask, last, right_padded).squeeze(1)  # (B,)


def value_sequences(critic: nn.Module, input_ids: Tensor, attention_mask: Tensor, prompt_len: int) -> Tensor:
    """Per-token values V_i before emitting response token i, same columns as the logprobs: -> (B, T)."""
    return _token_scores(critic, input_ids, attention_mask, slice(prompt_len - 1, -1))  # (B, T)


# -- sampling ---------------------------------------------------------------------------------------------------
def _filter_top_p(logits: Tensor, top_p: float) -> Tensor:
    """(B, V) logits/τ -> the same with every token outside the nucleus at −inf: the smallest set of the most
    probable tokens whose probability reaches top_p (transformers' TopPLogitsWarper; the top token always stays)."""
    probs, order = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True)
    outside = (probs.cumsum(dim=-1) - probs) >= top_p  # (B, V) mass of the more probable tokens already ≥ top_p
    return logits.masked_fill(outside.scatter(1, order, outside), float("-inf"))


def _sample_step(logits: Tensor, temperature: float, top_p: float, logprobs: bool = False, u: Tensor | None = None
                 ) -> tuple[Tensor, Tensor | None]:
    """(B, V) logits -> (B,) tokens ~ softmax(logits/τ) (nucleus-filtered if top_p < 1) and, if asked, the (B, V)
    log-probs they were drawn from. Inverse-CDF sampling, one uniform per row (`u` (B, 1), else drawn from the
    global RNG): the same distribution as torch.multinomial, which draws V exponentials per row (~10 % of
    generation time at V = 1024)."""
    scaled = logits.float() / temperature
    if top_p < 1.0:
        scaled = _filter_top_p(scaled, top_p)
    weights = (scaled - scaled.max(dim=-1, keepdim=True).values).exp()  # (B, V) unnormalized probabilities
    if u is None:
        u = torch.rand(weights.shape[0], 1, device=weights.device, dtype=torch.float64)
    return inverse_cdf_sample(weights, u), F.log_softmax(scaled, dim=-1) if logprobs else None


def inverse_cdf_sample(weights: Tensor, u: Tensor) -> Tensor:
    """(B, V) unnormalized probabilities, (B, 1) uniforms in [0, 1) -> (B,) the first token whose cumulative
    weight exceeds u·total. The cumulative sum is float64: in float32 it drifts over large vocabularies (past 2**24
    equal weights it stops growing), so tail tokens would get the wrong share or none."""
    cdf = weights.double().cumsum(dim=-1)  # (B, V)
    return torch.searchsorted(cdf, u.double() * cdf[:, -1:], right=True).squeeze(1).clamp_(max=cdf.shape[1] - 1)


@dataclass(frozen=True)
class BatchShare:
    """This process samples the rows of rank `rank`: a contiguous share, in rank order, of a batch that other
    processes (data-parallel actor replicas) sample at the same time from the same seed. `gather(active, ended)`
    is a collective every rank calls once per decoding step: this rank's counts of rows still computed and of
    those that have ended -> every rank's, in rank order. The share's rows then draw exactly the uniforms they
    draw when one process samples the whole batch (one stream, consumed row by row over the rows still computed),
    drop ended rows at the same steps, and every share stops at the same step (T is the batch's)."""

    rank: int
    gather: Callable[[int, int], list[tuple[int, int]]]


ALONE = BatchShare(0, lambda active, ended: [(active, ended)])  # the whole batch in this process


def _decode(  # noqa: PLR0913 — the sampler's knobs
    model: nn.Module, prompt_ids: Tensor, prompt_mask: Tensor, *, max_new_tokens: int, temperature: float,
    top_p: float, eos_id: int, pad_id: int, logprobs: bool, share: BatchShare = ALONE,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The sampling loop: prefill the left-padded prompts, then one token per step for every row (models.kv: the
    KV cache in preallocated buffers). A row that emitted EOS gets pad from then on (its mask stays 1, as in
    `generate`; eos_mask drops those columns later); once a quarter of the rows still computed have ended, they
    are dropped from the batch the model runs (a step costs about linearly in rows: on the default task ~40 % of
    the row-steps are past EOS). Stops when every row has ended or after max_new_tokens
    (T = the steps taken). position_ids continue each row's own count of real tokens (item 3), so the
    sampler's logits are the training forward's. Rows, drops and the stop are counted over the whole batch when
    this process samples a share of it (`share`). Returns (B, T) tokens and, if asked, (B, T) the sampler's
    log-probs of them."""
    b, p = prompt_ids.shape
    device = prompt_ids.device
    step_fn = stepper(model, prompt_mask, p + max_new_tokens)
    positions = position_ids_from_mask(prompt_mask)  # (B, P)
    first = positions[:, -1] + 1  # (b_active,) position of the first response token (column P − 1 is real)
    tokens = torch.full((b, max_new_tokens), pad_id, dtype=torch.long, device=device)
    token_logp = torch.zeros(b, max_new_tokens, device=device) if logprobs else None
    active = torch.arange(b, device=device)  # the rows the model still runs; ended rows leave it in bulk
    ended = torch.zeros(b, dtype=torch.bool, device=device)  # (b_active,)
    logits = step_fn(prompt_ids, positions)  # (B, V)
    counts = share.gather(b, 0)  # every share's (rows computed, rows ended), in rank order
    steps = 0
    for t in range(max_new_tokens):
        offset = sum(n for n, _ in counts[:share.rank])  # this share's rows within the batch's rows computed
        u = torch.rand(sum(n for n, _ in counts), 1, device=device, dtype=torch.float64,
                       generator=generator)[offset:offset + len(active)]
        step, logp = _sample_step(logits, temperature, top_p, logprobs, u)  # (b_active,)
        steps = t + 1
        step.masked_fill_(ended, pad_id)
        tokens[active, t] = step
        if token_logp is not None and logp is not None:
            token_logp[active, t] = logp.gather(1, step[:, None]).squeeze(1)
        ended |= step == eos_id
        counts = share.gather(len(active), int(ended.sum()))
        computed, done = sum(n for n, _ in counts), sum(e for _, e in counts)
        if t == max_new_tokens - 1 or done == computed:
            break
        if 4 * done >= computed:  # a quarter has ended: stop computing those rows
            keep = (~ended).nonzero().squeeze(1)
            if len(keep):
                step_fn.keep(keep)
            active, step, ended, first = active[keep], step[keep], ended[keep], first[keep]
            counts = [(n - e, 0) for n, e in counts]
        # a share whose rows have all ended samples no row while the others go on
        logits = step_fn(step[:, None], (first + t)[:, None]) if len(active) else logits[:0]
    return tokens[:, :steps], token_logp[:, :steps] if token_logp is not None else None


@torch.no_grad()
def sample_responses(  # noqa: PLR0913 — the sampler's knobs are the API
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts_ids: Sequence[Sequence[int]],
    *,
    n: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 32,
    seed: int | None = None,
    return_logprobs: bool = False,
    share: BatchShare = ALONE,
) -> PromptResponseBatch:
    """Sample n responses per prompt from softmax(logits/τ): exactly that distribution (item 5: no top-k, no
    repetition penalty, no minimum length; the model's generation_config.json is never read).

    top_p < 1 samples from the nucleus only; the training forward's logprobs then differ from the sampler's,
    so PPO rollouts must keep top_p = 1 (PPO.md item 5); evaluation may use it.

    Rows are prompt-major: row i·n + j is sample j of prompt i. With `seed`, sampling draws from a generator of its
    own seeded with it (the stream torch.manual_seed(seed) gives) and the global RNG is untouched; without, it
    draws from the global RNG.
    `return_logprobs` also returns the sampler's own logprobs of the sampled tokens (for diagnostics; PPO
    recomputes them with the training forward, item 7). `share`: these prompts are one data-parallel replica's
    share of a batch the replicas sample together (BatchShare): each row then gets the tokens it gets when one
    process samples the whole batch (up to the floating-point noise of another batch composition).

    Our own loop rather than `model.generate`: 2.2× its tokens/s on the default model on CPU (inverse-CDF
    sampling, lean decoding steps on a preallocated KV cache (models.kv), ended rows dropped in bulk, no logits
    processors; benchmarks/rl_step), same distribution.
    """
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise ValueError("sampling needs a pad token distinct from eos: call ensure_pad_token(tokenizer, model)")
    if n < 1 or max_new_tokens < 1 or not temperature > 0 or not 0 < top_p <= 1:
        raise ValueError(f"bad sampling settings: n={n}, max_new_tokens={max_new_tokens}, τ={temperature}, "
                         f"top_p={top_p}; "
                         "need n ≥ 1, max_new_tokens ≥ 1, τ > 0, 0 < top_p ≤ 1")
    expanded = [list(p) for p in prompts_ids for _ in range(n)]
    if any(len(p) == 0 for p in expanded):
        raise ValueError("every prompt needs at least one token (e.g. BOS)")
    prompt_ids, prompt_mask = pad_left(expanded, tokenizer.pad_token_id)  # (B, P)
    device = next(model.parameters()).device
    check_ids_in_vocab(model, prompt_ids)
    was_training = model.training
    model.eval()
    try:
        generator = None if seed is None else torch.Generator(device).manual_seed(seed)
        response_ids, logp = _decode(model, prompt_ids.to(device), prompt_mask.to(device),
                                     max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                     eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
                                     logprobs=return_logprobs, share=share, generator=generator)
    finally:
        model.train(was_training)
    response_ids = response_ids.cpu()  # (B, T), pad after the first EOS
    response_mask = eos_mask(response_ids, tokenizer.eos_token_id)  # (B, T)
    sampler_logprobs = logp.cpu() if logp is not None else None
    return PromptResponseBatch(prompt_ids, prompt_mask, response_ids, response_mask, sampler_logprobs)


# -- compatibility ----------------------------------------------------------------------------------------------
def _special_ids(tok: PreTrainedTokenizerBase) -> dict[str, int | None]:
    return {f"{k}_token_id": getattr(tok, f"{k}_token_id") for k in ("bos", "eos", "pad", "unk")}


def _tokenizer_differences(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase, na: str, nb: str) -> list[str]:
    diffs = []
    for key, va in _special_ids(a).items():
        vb = getattr(b, key)
        if va != vb:
            diffs.append(f"{key} {va} ({na}) vs {vb} ({nb})")
    vocab_a, vocab_b = a.get_vocab(), b.get_vocab()
    if vocab_a != vocab_b:
        only_a = sorted(set(vocab_a) - set(vocab_b))[:3]
        only_b = sorted(set(vocab_b) - set(vocab_a))[:3]
        moved = sorted(t for t in set(vocab_a) & set(vocab_b) if vocab_a[t] != vocab_b[t])[:3]
        detail = "; ".join(
            x for x in (
                f"only in {na}: {only_a}" if only_a else "",
                f"only in {nb}: {only_b}" if only_b else "",
                f"different ids for {moved}" if moved else "",
            ) if x
        )
        diffs.append(f"vocabulary {len(vocab_a)} tokens ({na}) vs {len(vocab_b)} ({nb}): {detail}")
    if (a.chat_template or None) != (b.chat_template or None):
        diffs.append(f"chat_template {'set' if a.chat_template else 'missing'} ({na}) "
                     f"vs {'set' if b.chat_template else 'missing'} ({nb}) or different")
    return diffs


def check_tokenizers_compatible(named: Mapping[str, PreTrainedTokenizerBase]) -> None:
    """Raise ValueError naming the two artifacts and what differs (special ids, vocabulary, chat template).

    Policy, reference, reward model and critic must share one tokenizer: a token id means the same thing to
    all of them, and the pad/eos ids drive every mask. Each tokenizer must also have pad ≠ eos.
    """
    items = list(named.items())
    for name, tok in items:
        if tok.pad_token_id is None or tok.pad_token_id == tok.eos_token_id:
            raise ValueError(f"tokenizer of {name!r} has pad_token_id {tok.pad_token_id} = eos or missing; "
                             "run ensure_pad_token on it (and its model) before training")
    first_name, first = items[0]
    for name, tok in items[1:]:
        diffs = _tokenizer_differences(first, tok, first_name, name)
        if diffs:
            raise ValueError(
                f"tokenizers of {first_name!r} and {name!r} are incompatible: " + "; ".join(diffs)
                + f". Build {name!r} from the same tokenizer as {first_name!r} (e.g. the SFT model's)."
            )
