"""RewardScorer: normalized reward-model scores of (prompt, response) texts, for label, evaluate and ppo.

    scorer = RewardScorer("runs/rm")                      # an RM artifact (a reward stage's output)
    scorer.score(["Review of the lamp:"], [" It is great."])   # -> [1.73]  normalized: πSFT samples ~ N(0, 1)
    scorer.score_raw(prompts, responses)                  # the head's raw output, before normalization
    scorer.score_batch(batch)                             # (B,) tensor for token batches (ppo): same tokenizer

A response is encoded exactly as in training (alignpipe.data.tokenize.encode_pair: prompt with the model's
special tokens or chat template, response + one EOS) and scored at its last token, the EOS (PPO.md item 22),
with position ids from the mask. The score is S = gain·(raw + bias), the normalization the reward stage
recorded in the model's config (models.build.set_reward_normalization; (0, 1) if none).

`preference_scores` is the reward stage's training forward over PreferenceSamples (one row per pair for GPT-2
and Llama, models.lean; prompt + response rows otherwise).

Over-long pairs (prompt + response > max_length, itself capped at the model's positions) are cut from the
left, keeping the end of the response that is scored; `truncated` counts them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from alignpipe.data.tokenize import PreferenceSample, encode_pair, preference_rows
from alignpipe.models import lean, max_positions
from alignpipe.models.build import load_reward_model, load_tokenizer, normalized_scores, reward_normalization
from alignpipe.models.forward import PromptResponseBatch, collate_prompt_response, score_sequences, use_fused_kernels


class RewardScorer:
    """Normalized scores from a reward model (a *ForSequenceClassification with num_labels=1)."""

    def __init__(self, model_dir: str | Path, *, batch_size: int = 32, max_length: int = 512):
        tokenizer = load_tokenizer(model_dir)
        self._init(use_fused_kernels(load_reward_model(model_dir)), tokenizer, batch_size, max_length)

    @classmethod
    def from_model(cls, model: nn.Module, tokenizer: PreTrainedTokenizerBase, *, batch_size: int = 32,
                   max_length: int = 512) -> RewardScorer:
        """Wrap an in-memory RM (e.g. the reward stage's, before it is saved) without reloading it."""
        scorer = cls.__new__(cls)
        scorer._init(model, tokenizer, batch_size, max_length)
        return scorer

    def _init(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, batch_size: int, max_length: int) -> None:
        if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
            raise ValueError("the reward model's tokenizer needs a pad token distinct from eos (ensure_pad_token)")
        if batch_size < 1 or max_length < 2:
            raise ValueError(f"need batch_size ≥ 1 and max_length ≥ 2, got {batch_size}, {max_length}")
        config = getattr(model, "config", None)
        limit = max_positions(config)
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.max_length = min(max_length, limit) if isinstance(limit, int) else max_length
        self.truncated = 0

    @property
    def normalization(self) -> tuple[float, float]:
        """(bias, gain) with S = gain·(raw + bias)."""
        return reward_normalization(self.model)

    def encode(self, prompt: Any, response: str) -> tuple[list[int], list[int]]:
        """(prompt ids, response ids ending in EOS), cut from the left to fit max_length."""
        p, r = encode_pair(self.tokenizer, prompt, response)
        if len(p) + len(r) > self.max_length:
            self.truncated += 1
            keep_r = min(len(r), self.max_length - 1)
            p, r = p[-(self.max_length - keep_r):], r[-keep_r:]
        return p, r

    @torch.no_grad()
    def score_batch(self, batch: PromptResponseBatch, normalized: bool = True) -> Tensor:
        """(B,) scores of a left-padded prompt / right-padded response batch (token ids of this tokenizer), in
        forwards of about `batch_size` rows of similar length, each cut to the columns it uses."""
        device = next(self.model.parameters()).device
        (raw,) = batch.map_by_length(lambda sub: (score_sequences(self.model, sub.input_ids.to(device),
                                                                  sub.attention_mask.to(device)).cpu(),),
                                     rows_per_chunk=self.batch_size)
        return normalized_scores(self.model, raw) if normalized else raw

    def _scores(self, prompts: Sequence[Any], responses: Sequence[str], normalized: bool) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            return []
        encoded = [self.encode(p, r) for p, r in zip(prompts, responses, strict=True)]
        batch = collate_prompt_response([p for p, _ in encoded], [r for _, r in encoded], self.tokenizer.pad_token_id)
        was_training = self.model.training
        self.model.eval()
        try:  # score_batch groups rows of similar length: scores do not depend on batch-mates beyond rounding
            return [float(s) for s in self.score_batch(batch, normalized).tolist()]
        finally:
            self.model.train(was_training)

    def score(self, prompts: Sequence[Any], responses: Sequence[str]) -> list[float]:
        """Normalized scores S (mean 0, std 1 on the πSFT samples the reward stage calibrated on)."""
        return self._scores(prompts, responses, normalized=True)

    def score_raw(self, prompts: Sequence[Any], responses: Sequence[str]) -> list[float]:
        """Raw head outputs, before the recorded normalization."""
        return self._scores(prompts, responses, normalized=False)


def preference_length(sample: PreferenceSample, packed: bool) -> int:
    """The columns a pair takes in `preference_scores`' batch: prompt + both responses packed, else the prompt and
    the longer response (for length-grouped batches)."""
    responses = (len(sample.chosen_ids) + len(sample.rejected_ids) if packed
                 else max(len(sample.chosen_ids), len(sample.rejected_ids)))
    return len(sample.prompt_ids) + responses


def preference_scores(rm: nn.Module, samples: Sequence[PreferenceSample], pad_id: int) -> tuple[Tensor, Tensor, int]:
    """Scores of each pair's chosen and rejected response, (B,) each, with grad, and the real tokens computed.

    GPT-2/Llama (`lean.supports`): one row per pair, the prompt computed once (`lean.pair_scores`). Otherwise 2B
    right-padded prompt + response rows through transformers (`score_sequences(right_padded=True)`). Both equal
    scoring each response after its prompt alone."""
    device = next(rm.parameters()).device
    if lean.supports(rm):
        pairs = lean.pack_pairs(list(samples), pad_id).to(device)
        chosen, rejected = lean.pair_scores(rm, pairs)
        return chosen, rejected, pairs.tokens
    ids, mask = (t.to(device) for t in preference_rows(samples, pad_id))  # (2B, L)
    chosen, rejected = score_sequences(rm, ids, mask, right_padded=True).chunk(2)
    return chosen, rejected, int(mask.sum())
