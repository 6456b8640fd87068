"""Dataset record formats, validated into small typed objects.

Accepted records (JSON objects; extra fields are ignored):

- text (pretraining):       {"text": str}
- prompts (RL, evaluation): {"prompt": str | conversation}  or  {"messages": conversation} (not ending in an
                            assistant turn)
- SFT:                      {"prompt": str | conversation, "completion": str | [assistant message]}
                            or {"messages": conversation ending in an assistant turn}
- preferences:              {"prompt": str | conversation, "chosen": str | [assistant message], "rejected": ...}
                            or, with an implicit prompt, {"chosen": conversation, "rejected": conversation}
                            sharing every turn but the last (TRL's conversational HH), or Anthropic HH raw
                            strings "\\n\\nHuman: …\\n\\nAssistant: …" sharing everything up to the last
                            "\\n\\nAssistant:".

A conversation is a non-empty list of {"role": "system" | "user" | "assistant", "content": str}.

Each parse_* function raises DataError on the first bad record, or, given a SkipCounter, skips bad records,
counts them by reason and raises only when their fraction exceeds the counter's limit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from alignpipe.data.errors import DataError, SkipCounter

Message = dict[str, str]
Prompt = str | list[Message]  # plain text, or a conversation rendered with the tokenizer's chat template
ROLES = ("system", "user", "assistant")
HH_ASSISTANT = "\n\nAssistant:"

T = TypeVar("T")


@dataclass(frozen=True)
class PromptCompletion:
    prompt: Prompt
    completion: str  # the text after the prompt (for a conversation: the assistant turn's content)


@dataclass(frozen=True)
class Preference:
    prompt: Prompt
    chosen: str
    rejected: str


def is_chat(prompt: Prompt) -> bool:
    return isinstance(prompt, list)


class _Rec:
    """One record being validated: raises DataErrors that name source, index and field."""

    def __init__(self, rec: dict[str, Any], source: str, index: int, fmt: str):
        self.rec, self.source, self.index, self.fmt = rec, source, index, fmt

    def error(self, field: str | None, problem: str, fix: str, reason: str = "invalid") -> DataError:
        return DataError(self.source, self.index, field, problem, fix, reason)

    def require(self, key: str) -> Any:
        if key not in self.rec or self.rec[key] is None:
            raise self.error(key, "missing", f"add a {key!r} field ({self.fmt})", "missing_field")
        return self.rec[key]

    def text(self, key: str, value: Any, what: str = "text") -> str:
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {type(value).__name__}", f"make {key!r} a string",
                             "wrong_type")
        if not value.strip():
            raise self.error(key, f"empty {what}", f"give {key!r} non-blank text or drop the record", "empty")
        return value

    def conversation(self, key: str, value: Any) -> list[Message]:
        fix = 'use a list of {"role": "system"|"user"|"assistant", "content": str}'
        if not isinstance(value, list):
            raise self.error(key, f"expected a conversation (list), got {type(value).__name__}", fix, "wrong_type")
        if not value:
            raise self.error(key, "empty conversation", "give at least one message or drop the record", "empty")
        out = []
        for j, m in enumerate(value):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise self.error(f"{key}[{j}]", f"not a valid message: {str(m)[:80]}", fix, "bad_message")
            out.append({"role": m["role"], "content": m["content"]})
        return out

    def prompt(self, key: str = "prompt") -> Prompt:
        value = self.require(key)
        if isinstance(value, list):
            conv = self.conversation(key, value)
            if conv[-1]["role"] == "assistant":
                raise self.error(key, "prompt conversation ends with an assistant turn",
                                 "end the prompt with a user (or system) turn; put the reply in the completion")
            return conv
        return self.text(key, value, "prompt")

    def reply(self, key: str) -> str:
        """A response: a string, or a one-message assistant conversation."""
        value = self.require(key)
        if isinstance(value, list):
            conv = self.conversation(key, value)
            if len(conv) != 1 or conv[0]["role"] != "assistant":
                raise self.error(key, "expected a single assistant message",
                                 'give [{"role": "assistant", "content": ...}] or a string')
            value = conv[0]["content"]
        return self.text(key, value, "response")


def _parse(
    records: Sequence[dict[str, Any]], source: str, skips: SkipCounter | None, one: Callable[[_Rec], T], fmt: str
) -> list[T]:
    out: list[T] = []
    for i, rec in enumerate(records):
        if skips is not None:
            skips.count()
        try:
            if not isinstance(rec, dict):
                raise DataError(source, i, None, f"record is a {type(rec).__name__}, not an object",
                                "make every record a JSON object", "wrong_type")
            out.append(one(_Rec(rec, source, i, fmt)))
        except DataError as e:
            if skips is None:
                raise
            skips.skip(e)
    if skips is not None:
        skips.check()
    return out


def parse_texts(records: Sequence[dict[str, Any]], source: str, skips: SkipCounter | None = None) -> list[str]:
    """Pretraining documents: records {"text": str}."""
    return _parse(records, source, skips, lambda r: r.text("text", r.require("text")), 'format: {"text": str}')


def _one_prompt(r: _Rec) -> Prompt:
    if "prompt" not in r.rec and "messages" in r.rec:
        return r.prompt("messages")
    return r.prompt()


def parse_prompts(records: Sequence[dict[str, Any]], source: str, skips: SkipCounter | None = None) -> list[Prompt]:
    """Prompts for sampling: records {"prompt": str | conversation} or {"messages": conversation}."""
    return _parse(records, source, skips, _one_prompt, 'format: {"prompt": str or conversation}')


def _one_sft(r: _Rec) -> PromptCompletion:
    if "chosen" in r.rec and "completion" not in r.rec and "messages" not in r.rec:
        raise r.error("completion", "missing: this is a preference pair (chosen/rejected), not a demonstration",
                      "to train on the chosen responses set the sft stage's param `use: chosen`", "missing_field")
    if "messages" in r.rec and "prompt" not in r.rec:
        conv = r.conversation("messages", r.rec["messages"])
        if conv[-1]["role"] != "assistant":
            raise r.error("messages", "conversation does not end with an assistant turn",
                          "end it with the assistant reply to learn", "no_reply")
        if len(conv) < 2:
            raise r.error("messages", "conversation has no prompt turns before the reply",
                          "add the user turn the reply answers", "empty")
        r.text("messages", conv[-1]["content"], "assistant reply")
        return PromptCompletion(conv[:-1], conv[-1]["content"])
    return PromptCompletion(r.prompt(), r.reply("completion"))


def parse_sft(
    records: Sequence[dict[str, Any]], source: str, skips: SkipCounter | None = None
) -> list[PromptCompletion]:
    """Demonstrations: prompt/completion records or chat `messages` ending in the assistant reply."""
    return _parse(records, source, skips, _one_sft,
                  'format: {"prompt": ..., "completion": ...} or {"messages": [...]}')


def _split_hh(r: _Rec, key: str) -> tuple[str, str]:
    text = r.text(key, r.require(key), "response")
    cut = text.rfind(HH_ASSISTANT)
    if cut < 0:
        raise r.error("prompt", "missing, and chosen/rejected are not HH transcripts with a shared prompt",
                      "add a 'prompt' field, or give chosen/rejected as conversations sharing the prompt turns",
                      "missing_field")
    cut += len(HH_ASSISTANT)
    return text[:cut], r.text(key, text[cut:], "response")


def _one_preference(r: _Rec) -> Preference:
    pref = _preference_sides(r)
    if pref.chosen == pref.rejected:
        raise r.error("rejected", "identical to chosen, so the pair states no preference",
                      "drop the pair or fix one of its responses", "identical")
    return pref


def _preference_sides(r: _Rec) -> Preference:
    if "prompt" in r.rec:
        return Preference(r.prompt(), r.reply("chosen"), r.reply("rejected"))
    chosen, rejected = r.require("chosen"), r.require("rejected")
    if isinstance(chosen, list) and isinstance(rejected, list):  # implicit prompt: shared conversation prefix
        conv_c, conv_r = r.conversation("chosen", chosen), r.conversation("rejected", rejected)
        for key, conv in (("chosen", conv_c), ("rejected", conv_r)):
            if conv[-1]["role"] != "assistant" or len(conv) < 2:
                raise r.error(key, "conversation must be prompt turns followed by one assistant reply",
                              "end it with the assistant reply, after at least one prompt turn")
        if conv_c[:-1] != conv_r[:-1]:
            raise r.error("rejected", "chosen and rejected do not share the same prompt turns",
                          "make every turn but the last identical, or give an explicit 'prompt'", "prompt_mismatch")
        return Preference(conv_c[:-1], r.text("chosen", conv_c[-1]["content"], "response"),
                          r.text("rejected", conv_r[-1]["content"], "response"))
    (prompt_c, reply_c), (prompt_r, reply_r) = _split_hh(r, "chosen"), _split_hh(r, "rejected")
    if prompt_c != prompt_r:
        raise r.error("rejected", "chosen and rejected transcripts differ before the last assistant turn",
                      "make both share the dialogue up to the last '\\n\\nAssistant:'", "prompt_mismatch")
    return Preference(prompt_c, reply_c, reply_r)


PREFERENCE_FORMAT = 'format: {"prompt": ..., "chosen": ..., "rejected": ...}'


def parse_preferences(
    records: Sequence[dict[str, Any]], source: str, skips: SkipCounter | None = None
) -> list[Preference]:
    """Preference pairs: explicit prompt + chosen/rejected, or implicit-prompt conversations / HH transcripts.
    A pair whose chosen and rejected responses are identical is refused (reason `identical`)."""
    return _parse(records, source, skips, _one_preference, PREFERENCE_FORMAT)


def parse_chosen(
    records: Sequence[dict[str, Any]], source: str, skips: SkipCounter | None = None
) -> list[PromptCompletion]:
    """Demonstrations from preference pairs: each pair's prompt and its chosen response (SFT on the chosen side)."""
    return _parse(records, source, skips, lambda r: _as_demo(_preference_sides(r)), PREFERENCE_FORMAT)


def _as_demo(pref: Preference) -> PromptCompletion:
    return PromptCompletion(pref.prompt, pref.chosen)
