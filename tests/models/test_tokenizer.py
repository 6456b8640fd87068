import copy

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from alignpipe.models.build import LMSpec, build_causal_lm
from alignpipe.models.tokenizer import BOS, EOS, PAD, ensure_pad_token, train_tokenizer


def test_special_tokens_are_distinct_and_bos_is_prepended(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = {tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id}
    assert len(ids) == 4 and None not in ids
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (BOS, EOS, PAD)
    enc = tok("Review of the lamp:")["input_ids"]
    assert enc[0] == tok.bos_token_id and tok.eos_token_id not in enc
    assert tok("Review of the lamp:", add_special_tokens=False)["input_ids"] == enc[1:]
    assert tok.decode(enc, skip_special_tokens=True) == "Review of the lamp:"


def test_byte_level_roundtrips_unseen_characters(tiny_tokenizer):
    text = "naïve 日本 ✓ tabs\tand\nnewlines"
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.unk_token_id not in ids
    assert tiny_tokenizer.decode(ids) == text


def test_saved_tokenizer_keeps_ids(tiny_tokenizer, tmp_path):
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded = PreTrainedTokenizerFast.from_pretrained(tmp_path)
    assert loaded.get_vocab() == tiny_tokenizer.get_vocab()
    assert (loaded.pad_token_id, loaded.eos_token_id) == (tiny_tokenizer.pad_token_id, tiny_tokenizer.eos_token_id)
    assert loaded("Review of the mug:")["input_ids"] == tiny_tokenizer("Review of the mug:")["input_ids"]


def test_training_is_deterministic():
    texts = ["It works well.", "It broke after a week.", "Review of the lamp: Great."] * 30
    assert train_tokenizer(texts, 300).get_vocab() == train_tokenizer(texts, 300).get_vocab()


def test_vocab_size_below_bytes_plus_specials_is_rejected():
    with pytest.raises(ValueError, match="vocab_size must be ≥ 263"):
        train_tokenizer(["hello"], vocab_size=100)


def test_ensure_pad_token_replaces_pad_equal_to_eos(tiny_tokenizer):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.pad_token = tok.eos_token
    assert ensure_pad_token(tok) is True
    assert tok.pad_token == PAD and tok.pad_token_id != tok.eos_token_id
    assert len(tok) == len(tiny_tokenizer)  # <|pad|> was already in the vocabulary
    assert ensure_pad_token(tok) is False


def _gpt2_like_tokenizer_without_pad() -> PreTrainedTokenizerFast:
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    raw.add_tokens([chr(c) for c in range(97, 123)])
    raw.add_special_tokens(["<|endoftext|>"])
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def test_ensure_pad_token_adds_token_and_resizes_model(tiny_tokenizer):
    tok = _gpt2_like_tokenizer_without_pad()
    tok.pad_token = tok.eos_token  # the usual GPT-2 workaround, which PPO.md item 1 forbids
    model = build_causal_lm(LMSpec(n_layer=1, hidden=16, n_head=2, max_positions=16), tiny_tokenizer)
    model.resize_token_embeddings(len(tok))
    before = len(tok)
    assert ensure_pad_token(tok, model) is True
    assert len(tok) == before + 1 and tok.pad_token_id == before != tok.eos_token_id
    assert model.get_input_embeddings().num_embeddings == len(tok)
    assert model.config.pad_token_id == tok.pad_token_id == model.generation_config.pad_token_id
    with torch.no_grad():
        model(input_ids=torch.tensor([[tok.pad_token_id]]))  # the new id reaches a real embedding row
    assert ensure_pad_token(tok, model) is False
