"""The label stage's params for the human and LLM judges (one class each, nested under `human:`, `llm:`,
`openai:`). Plain pydantic: importing them never loads FastAPI, torch or an HTTP client."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from alignpipe.pipeline.stagedef import StrictParams

LM_TEMPLATE = ("Two responses to the same prompt follow. Which one is better?\n\nPrompt: {prompt}\n\n"
               "Response A: {a}\n\nResponse B: {b}\n\nThe better response is")
CHAT_TEMPLATE = ("Which of the two responses to the prompt below is better? Answer with the single letter A or B."
                 "\n\n[Prompt]\n{prompt}\n\n[Response A]\n{a}\n\n[Response B]\n{b}")
PLACEHOLDERS = ("{prompt}", "{a}", "{b}")


def prompt_text(prompt: Any) -> str:
    """A prompt as text: a chat conversation as "role: content" lines."""
    if isinstance(prompt, list):
        return "\n\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in prompt)
    return str(prompt)


def fill(template: str, prompt: Any, a: str, b: str) -> str:
    """The template with its placeholders replaced (not str.format: responses may contain braces)."""
    out = template
    for key, value in zip(PLACEHOLDERS, (prompt_text(prompt), a, b), strict=True):
        out = out.replace(key, value)
    return out


def _has_placeholders(template: str) -> str:
    missing = [p for p in PLACEHOLDERS if p not in template]
    if missing:
        raise ValueError(f"template lacks {', '.join(missing)}; it must contain {{prompt}}, {{a}} and {{b}}")
    return template


class HumanParams(StrictParams):
    overlap: int = Field(default=1, ge=1, le=25)
    """annotators per pair (k): a pair is done when k different people voted on it (a skip is not a vote)"""
    guidelines: str = Field(default="", max_length=20000)
    """plain text shown above every pair"""
    lease_seconds: float = Field(default=600, gt=0)
    """how long a pair shown to someone is held for them before it may go to another annotator"""


class LLMParams(StrictParams):
    template: str = LM_TEMPLATE
    """the pairwise prompt, with {prompt}, {a} and {b}; the model's next token after it decides"""
    choices: tuple[str, str] = (" A", " B")
    """the answers for a and for b; their first tokens' logits are compared"""
    batch_size: int = Field(default=8, ge=1)
    """prompts per forward pass"""
    max_length: int = Field(default=1024, ge=16)
    """longer inputs keep their end (the answer cue) and lose their start; also capped by the model's positions"""

    _check_template = field_validator("template")(_has_placeholders)


class OpenAIParams(StrictParams):
    base_url: str = "https://api.openai.com/v1"
    """the endpoint's base URL (POST {base_url}/chat/completions)"""
    model: str = ""
    """the model name the endpoint serves (required)"""
    api_key_env: str = "OPENAI_API_KEY"
    """the environment variable holding the API key (the key itself never enters params or artifacts)"""
    template: str = CHAT_TEMPLATE
    """the user message, with {prompt}, {a} and {b}; the answer's first A or B decides"""
    system: str = "You are a careful, impartial judge of response quality."
    """the system message ("" for none)"""
    logprobs: bool = True
    """ask for the answer token's top log-probabilities, so P(A) vs P(B) is a probability, not a 0/1 answer"""
    concurrency: int = Field(default=4, ge=1, le=64)
    """requests in flight at once"""
    requests_per_minute: float = Field(default=60, gt=0)
    """the client's own rate limit, across all its threads"""
    max_retries: int = Field(default=5, ge=0)
    """retries of a request on 429, 5xx, time-outs and dropped connections (exponential backoff, Retry-After)"""
    timeout: float = Field(default=60, gt=0)
    """seconds per request"""
    input_price_per_million: float = Field(default=0, ge=0)
    """USD per million prompt tokens, for the cost in the summary (0: cost not reported)"""
    output_price_per_million: float = Field(default=0, ge=0)
    """USD per million completion tokens"""

    _check_template = field_validator("template")(_has_placeholders)
