"""Byte-level BPE tokenizers trained locally, wrapped as `transformers.PreTrainedTokenizerFast`.

Special tokens: <|bos|>, <|eos|>, <|pad|>, <|unk|> — pad is its own token, never eos (PPO.md item 1: with
pad = eos masks drop the real EOS and sequence-classification pooling scores the token before it). Encoding
a text with `add_special_tokens=True` prepends <|bos|>; nothing appends <|eos|>, callers add it where a
sequence ends (documents, completions).
"""

from __future__ import annotations

from collections.abc import Iterable

from transformers import PreTrainedModel, PreTrainedTokenizerFast

BOS, EOS, PAD, UNK = "<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

# Each turn is "<|role|>content<|eos|>"; the assistant turn ends with eos, so a model trained on it stops.
DEFAULT_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 1024,
    *,
    min_frequency: int = 2,
    chat_template: str | bool = False,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts`.

    The vocabulary holds the 256 byte symbols, the special tokens (including the chat role tokens, always
    reserved so chat and plain tokenizers share ids) and up to `vocab_size` entries in total.
    `chat_template=True` installs DEFAULT_CHAT_TEMPLATE; a string installs that Jinja template.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = [BOS, EOS, PAD, UNK, *ROLE_TOKENS]
    if vocab_size < 256 + len(specials):
        raise ValueError(f"vocab_size must be ≥ {256 + len(specials)} (bytes + special tokens), got {vocab_size}")
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, bos_id)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=list(ROLE_TOKENS),
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    if chat_template:
        wrapped.chat_template = DEFAULT_CHAT_TEMPLATE if chat_template is True else chat_template
    return wrapped


def ensure_pad_token(tokenizer: PreTrainedTokenizerFast, model: PreTrainedModel | None = None) -> bool:
    """Give `tokenizer` (and `model`) a dedicated pad token distinct from eos; True if anything changed.

    Adds <|pad|> when the pad token is missing or equal to eos, grows the model's embeddings when the
    tokenizer outgrew them, and writes the pad id into the model's config and generation config. The caller
    logs the change (it alters the artifact's tokenizer).
    """
    changed = False
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": PAD})
        changed = True
    if model is None:
        return changed
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
        changed = True
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None and getattr(cfg, "pad_token_id", None) != tokenizer.pad_token_id:
            cfg.pad_token_id = tokenizer.pad_token_id
            changed = True
    return changed
