import copy

import pytest
import torch

from alignpipe.data import DataError, Preference, PromptCompletion, SkipCounter
from alignpipe.data.tokenize import (
    IGNORE_INDEX,
    collate_lm,
    collate_preferences,
    encode_pair,
    encode_prompt,
    tokenize_preferences,
    tokenize_sft,
    tokenize_texts,
)
from alignpipe.models.tokenizer import DEFAULT_CHAT_TEMPLATE

CONV = [{"role": "user", "content": "Review the lamp."}]


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = DEFAULT_CHAT_TEMPLATE
    return tok


def test_sft_completion_only_mask(tiny_tokenizer):
    tok = tiny_tokenizer
    (s,) = tokenize_sft(tok, [PromptCompletion("Review of the lamp:", " It is great.")], max_len=64)
    prompt = tok("Review of the lamp:")["input_ids"]
    completion = tok(" It is great.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert s.input_ids == prompt + completion and s.input_ids[0] == tok.bos_token_id
    assert s.labels == [IGNORE_INDEX] * len(prompt) + completion
    (full,) = tokenize_sft(tok, [PromptCompletion("Review of the lamp:", " It is great.")], 64, completion_only=False)
    assert full.labels == full.input_ids


def test_chat_rendering_masks_the_prompt_turns(chat_tokenizer):
    tok = chat_tokenizer
    (s,) = tokenize_sft(tok, [PromptCompletion(CONV, "It is great.")], max_len=64)
    trained = [t for t, lab in zip(s.input_ids, s.labels, strict=True) if lab != IGNORE_INDEX]
    assert tok.decode(trained) == "It is great.<|eos|>"
    assert tok.decode(s.input_ids) == "<|bos|><|user|>Review the lamp.<|eos|><|assistant|>It is great.<|eos|>"
    assert encode_prompt(tok, CONV) == s.input_ids[: len(s.input_ids) - len(trained)]


def test_chat_template_eos_is_cut_after_first_eos(chat_tokenizer):
    tok = copy.deepcopy(chat_tokenizer)
    tok.chat_template = DEFAULT_CHAT_TEMPLATE.replace("+ eos_token }}", "+ eos_token + '\\n' }}")
    _, response = encode_pair(tok, CONV, "Fine.")
    assert response[-1] == tok.eos_token_id and tok.decode(response) == "Fine.<|eos|>"


def test_chat_data_without_chat_template_is_an_error(tiny_tokenizer):
    examples = [PromptCompletion("plain", " x"), PromptCompletion(CONV, "y")]
    with pytest.raises(DataError, match=r"demos: record 1, field 'prompt': the data holds chat conversations but "
                                        r"the tokenizer has no chat template\. Fix: use a tokenizer with a chat"):
        tokenize_sft(tiny_tokenizer, examples, 64, source="demos")
    with pytest.raises(DataError, match="no chat template"):
        tokenize_preferences(tiny_tokenizer, [Preference(CONV, "a", "b")], 64)


def test_overlong_examples_are_skipped_and_counted(tiny_tokenizer):
    examples = [PromptCompletion("Review of the lamp:", " ok.")] * 19 + [PromptCompletion("x", " very" * 80)]
    skips = SkipCounter("demos", max_fraction=0.1)
    assert len(tokenize_sft(tiny_tokenizer, examples, 32, skips=skips)) == 19
    assert skips.summary()["by_reason"] == {"too_long": 1}
    with pytest.raises(DataError, match=r"demos: record 19: \d+ tokens exceed max_len 32"):
        tokenize_sft(tiny_tokenizer, examples, 32, source="demos")  # strict without a counter
    with pytest.raises(DataError, match=r"1 of 2 records skipped"):
        tokenize_texts(tiny_tokenizer, ["short", "long " * 80], 32, skips=SkipCounter("corpus", 0.1))


def test_collate_lm_right_pads_and_ignores_pads(tiny_tokenizer):
    samples = tokenize_texts(tiny_tokenizer, ["It is great.", "Bad."], 64)
    batch = collate_lm(samples, tiny_tokenizer.pad_token_id)
    assert samples[0].input_ids[-1] == tiny_tokenizer.eos_token_id
    n0, n1 = len(samples[0].input_ids), len(samples[1].input_ids)
    assert batch["input_ids"].shape == (2, max(n0, n1))
    assert batch["attention_mask"].sum(1).tolist() == [n0, n1]
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
    assert batch["labels"][0, :n0].tolist() == samples[0].input_ids


def test_preference_collation_layout(tiny_tokenizer):
    tok = tiny_tokenizer
    pairs = [Preference("Review of the lamp:", " Great.", " It broke after a week."), Preference("Hi", " a", " b")]
    samples = tokenize_preferences(tok, pairs, 64)
    batch = collate_preferences(samples, tok.pad_token_id)
    assert batch.input_ids.shape[0] == 4
    assert batch.responses() == [samples[0].chosen_ids, samples[1].chosen_ids,
                                 samples[0].rejected_ids, samples[1].rejected_ids]
    assert all(r[-1] == tok.eos_token_id for r in batch.responses())
    assert torch.equal(batch.prompt_ids[0], batch.prompt_ids[2])


def test_pretraining_documents_cut_into_windows_keep_every_token_once(tiny_tokenizer):
    texts = ["It is great.", "long " * 40]
    whole = [tiny_tokenizer(t)["input_ids"] + [tiny_tokenizer.eos_token_id] for t in texts]
    samples = tokenize_texts(tiny_tokenizer, texts, 16, windows=True)
    assert all(1 < len(s.input_ids) <= 16 and s.labels == s.input_ids for s in samples)
    joined = [t for s in samples for t in s.input_ids]
    expected = [t for ids in whole for start in range(0, len(ids), 16) if len(ids[start:start + 16]) > 1
                for t in ids[start:start + 16]]
    assert joined == expected and len(samples) > len(texts)  # the long document became several windows
