"""Dataset formats, validation and reading (no torch); tokenization and collation live in
`alignpipe.data.tokenize` (imports torch and transformers)."""

from alignpipe.data.errors import DataError, SkipCounter
from alignpipe.data.formats import (
    Preference,
    Prompt,
    PromptCompletion,
    is_chat,
    parse_chosen,
    parse_preferences,
    parse_prompts,
    parse_sft,
    parse_texts,
)
from alignpipe.data.io import read_records, write_jsonl

__all__ = [
    "DataError",
    "Preference",
    "Prompt",
    "PromptCompletion",
    "SkipCounter",
    "is_chat",
    "parse_chosen",
    "parse_preferences",
    "parse_prompts",
    "parse_sft",
    "parse_texts",
    "read_records",
    "write_jsonl",
]
