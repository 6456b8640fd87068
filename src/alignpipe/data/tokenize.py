"""Tokenization for pretraining, SFT and reward modelling, and their collation into tensors.

Conventions shared by every stage (so a prompt is the same token list in sft, generate, ppo and evaluate):
- a plain prompt is encoded with the tokenizer's special tokens (our tokenizers prepend <|bos|>);
- a conversation prompt is rendered with the chat template and `add_generation_prompt=True`, then encoded
  without special tokens (the template writes its own);
- a response is encoded without special tokens and ends with exactly one EOS: for a conversation, the
  template's rendering of the assistant turn is cut after its first EOS (or gets one appended).
Over-long examples are skipped and counted, never truncated: a truncated target loses its EOS and teaches
the model not to stop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor
from transformers import PreTrainedTokenizerBase

from alignpipe.data.errors import DataError, SkipCounter
from alignpipe.data.formats import Preference, Prompt, PromptCompletion, is_chat
from alignpipe.models.forward import PromptResponseBatch, collate_prompt_response, pad_right

IGNORE_INDEX = -100  # label value excluded from the loss (HF convention)


@dataclass(frozen=True)
class LMSample:
    input_ids: list[int]
    labels: list[int]  # input_ids where trained on, IGNORE_INDEX elsewhere


@dataclass(frozen=True)
class PreferenceSample:
    prompt_ids: list[int]
    chosen_ids: list[int]  # ends with EOS
    rejected_ids: list[int]  # ends with EOS


def require_chat_template(tokenizer: PreTrainedTokenizerBase, source: str, index: int | None = None) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise DataError(
            source, index, "prompt", "the data holds chat conversations but the tokenizer has no chat template",
            "use a tokenizer with a chat template (train_tokenizer(..., chat_template=True)) or plain-text prompts",
            "no_chat_template",
        )


def _render_prompt(tokenizer: PreTrainedTokenizerBase, prompt: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, prompt: Prompt) -> list[int]:
    """Token ids of a prompt as every stage feeds it to a model."""
    if is_chat(prompt):
        require_chat_template(tokenizer, "prompt")
        return tokenizer(_render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    return tokenizer(prompt, add_special_tokens=True)["input_ids"]


def encode_pair(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, response: str) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids ending with one EOS)."""
    eos = tokenizer.eos_token_id
    if not is_chat(prompt):
        return encode_prompt(tokenizer, prompt), tokenizer(response, add_special_tokens=False)["input_ids"] + [eos]
    require_chat_template(tokenizer, "prompt")
    prompt_text = _render_prompt(tokenizer, prompt)
    full = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(prompt_text):
        raise ValueError("the chat template does not render the prompt as a prefix of the full conversation; "
                         "completion-only masking needs a prefix-consistent template")
    ids = tokenizer(full[len(prompt_text):], add_special_tokens=False)["input_ids"]
    ids = ids[: ids.index(eos) + 1] if eos in ids else [*ids, eos]
    return tokenizer(prompt_text, add_special_tokens=False)["input_ids"], ids


def _check_chat(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt], source: str) -> None:
    first_chat = next((i for i, p in enumerate(prompts) if is_chat(p)), None)
    if first_chat is not None:
        require_chat_template(tokenizer, source, first_chat)


def _too_long(source: str, index: int, length: int, max_len: int) -> DataError:
    return DataError(source, index, None, f"{length} tokens exceed max_len {max_len}",
                     "raise max_len or shorten the example", "too_long")


def _keep(skips: SkipCounter | None, error: DataError | None) -> bool:
    """Count one example; False (skip) when it has an error. Strict (no counter): raise it."""
    if skips is not None:
        skips.count()
    if error is None:
        return True
    if skips is None:
        raise error
    skips.skip(error)
    return False


def tokenize_texts(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_len: int,
    *,
    windows: bool = False,
    source: str = "texts",
    skips: SkipCounter | None = None,
) -> list[LMSample]:
    """Pretraining documents: [BOS] text [EOS], every token trained on. A document longer than max_len is an error
    (or skipped and counted, with `skips`); with windows=True it is cut into consecutive max_len windows instead
    (a final window of one token is dropped: it has nothing to predict)."""
    out = []
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=True)["input_ids"] + [tokenizer.eos_token_id]
        if windows:
            cuts = (ids[start : start + max_len] for start in range(0, len(ids), max_len))
            out += [LMSample(cut, list(cut)) for cut in cuts if len(cut) > 1]
        elif _keep(skips, _too_long(source, i, len(ids), max_len) if len(ids) > max_len else None):
            out.append(LMSample(ids, list(ids)))
    if skips is not None:
        skips.check()
    return out


def tokenize_sft(
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[PromptCompletion],
    max_len: int,
    *,
    completion_only: bool = True,
    source: str = "demonstrations",
    skips: SkipCounter | None = None,
) -> list[LMSample]:
    """Prompt + completion + EOS; labels cover the completion and EOS (and the prompt if not completion_only)."""
    _check_chat(tokenizer, [e.prompt for e in examples], source)
    out = []
    for i, ex in enumerate(examples):
        prompt_ids, completion_ids = encode_pair(tokenizer, ex.prompt, ex.completion)
        ids = prompt_ids + completion_ids
        if not _keep(skips, _too_long(source, i, len(ids), max_len) if len(ids) > max_len else None):
            continue
        prompt_labels = list(prompt_ids) if not completion_only else [IGNORE_INDEX] * len(prompt_ids)
        out.append(LMSample(ids, prompt_labels + completion_ids))
    if skips is not None:
        skips.check()
    return out


def tokenize_preferences(
    tokenizer: PreTrainedTokenizerBase,
    pairs: Sequence[Preference],
    max_len: int,
    *,
    source: str = "preferences",
    skips: SkipCounter | None = None,
) -> list[PreferenceSample]:
    """Prompt, chosen and rejected ids; skipped when prompt + the longer response exceeds max_len."""
    _check_chat(tokenizer, [p.prompt for p in pairs], source)
    out = []
    for i, pair in enumerate(pairs):
        prompt_ids, chosen = encode_pair(tokenizer, pair.prompt, pair.chosen)
        _, rejected = encode_pair(tokenizer, pair.prompt, pair.rejected)
        length = len(prompt_ids) + max(len(chosen), len(rejected))
        if _keep(skips, _too_long(source, i, length, max_len) if length > max_len else None):
            out.append(PreferenceSample(prompt_ids, chosen, rejected))
    if skips is not None:
        skips.check()
    return out


def collate_lm(samples: Sequence[LMSample], pad_id: int) -> dict[str, Tensor]:
    """Right-padded (B, L) input_ids, attention_mask and labels (IGNORE_INDEX on pads) for LM losses."""
    input_ids, attention_mask = pad_right([s.input_ids for s in samples], pad_id)  # (B, L)
    labels, _ = pad_right([s.labels for s in samples], IGNORE_INDEX)  # (B, L)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def collate_preferences(samples: Sequence[PreferenceSample], pad_id: int) -> PromptResponseBatch:
    """2B rows: the B chosen responses, then the B rejected ones, each after its left-padded prompt."""
    prompts = [s.prompt_ids for s in samples] * 2
    responses = [s.chosen_ids for s in samples] + [s.rejected_ids for s in samples]
    return collate_prompt_response(prompts, responses, pad_id)


def preference_rows(samples: Sequence[PreferenceSample], pad_id: int) -> tuple[Tensor, Tensor]:
    """The same 2B rows (chosen, then rejected) as prompt + response contiguous, right-padded: ids, mask (2B, L),
    L the longest prompt + response. For score_sequences(..., right_padded=True) in the reward training step."""
    rows = [s.prompt_ids + s.chosen_ids for s in samples] + [s.prompt_ids + s.rejected_ids for s in samples]
    return pad_right(rows, pad_id)
