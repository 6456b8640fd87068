"""Judges: who decides which of two responses is better.

The label stage hands a judge only the pairs it has not judged yet and checkpoints judgments as they arrive, so a
judge may be slow and may stop half-way (a `human` judge serving a labeling page would yield judgments as people
submit them and block until they do); a restart asks it only for the rest. A judge never sees the stage's files.

    class Judge(Protocol):
        def describe(self) -> dict               # recorded in the preference artifact's manifest
        def judge(self, pairs) -> Iterator[Judgment]   # any order, any pace; a pair may be left out (abstain)
        def report(self) -> JudgeReport          # after judge(): summary fields and extra files (raw answers)

Built in:
- FunctionJudge: a Python callable scores each response (`f(responses)` or `f(responses, prompts)` -> floats);
  with `noise_temperature` > 0 the label is a Bradley-Terry draw P(a > b) = sigmoid((s_a - s_b)/T), which is how
  the default task's simulated human labels. Each pair's draw is seeded by (seed, pair key), so labels do not
  depend on order or on where a run was resumed.
- RewardModelJudge: an RM artifact scores prompt+response; the higher score wins (ties abstain).
- alignpipe.labeling.judge.HumanJudge: people on a labeling page; alignpipe.labeling.llm_judge and
  .openai_judge: a local causal LM, or an OpenAI-compatible chat endpoint, asked in both orders.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Prompt = Any  # str or a chat conversation (list of {"role", "content"})


@dataclass(frozen=True)
class PairQuery:
    key: str  # stable across runs: "<record index>:<i>:<j>"
    prompt: Prompt
    a: str
    b: str


@dataclass(frozen=True)
class Judgment:
    key: str
    a_preferred: bool | None  # None: a tie / abstention (counted, not used)
    score_a: float | None = None
    score_b: float | None = None
    p_a: float | None = None  # the judge's P(a preferred), when it has one
    raw: dict[str, Any] | None = None  # the judge's own answer (an LLM's text, logprobs, token usage), kept


@dataclass(frozen=True)
class JudgeReport:
    summary: dict[str, Any] = field(default_factory=dict)  # merged into the artifact's summary (may override)
    files: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # extra JSONL files in the artifact


class Judge(Protocol):
    def describe(self) -> dict[str, Any]: ...

    def judge(self, pairs: Sequence[PairQuery]) -> Iterator[Judgment]: ...

    def report(self) -> JudgeReport: ...


def load_callable(ref: str) -> Callable[..., Any]:
    mod_name, _, attr = ref.partition(":")
    if not attr:
        raise ValueError(f"function {ref!r}: expected 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"function {ref!r} cannot be loaded: {e}") from None
    if not callable(fn):
        raise ValueError(f"function {ref!r} is not callable")
    return fn


def score_function(ref: str) -> Callable[[list[str], list[Prompt]], list[float]]:
    fn = load_callable(ref)
    positional = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 2:
        return lambda responses, prompts: list(fn(responses, prompts))
    return lambda responses, prompts: list(fn(responses))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def pair_rng(seed: int, key: str) -> random.Random:
    return random.Random(int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:16], 16))


class FunctionJudge:
    def __init__(self, function: str, noise_temperature: float, seed: int, batch_size: int = 256):
        self.ref, self.temperature, self.seed, self.batch_size = function, noise_temperature, seed, batch_size
        self.score = score_function(function)

    def describe(self) -> dict[str, Any]:
        return {"type": "function", "function": self.ref, "noise_temperature": self.temperature}

    def report(self) -> JudgeReport:
        return JudgeReport()

    def p_a(self, score_a: float, score_b: float) -> float:
        if self.temperature == 0:
            return 0.5 if score_a == score_b else float(score_a > score_b)
        return _sigmoid((score_a - score_b) / self.temperature)

    def judge(self, pairs: Sequence[PairQuery]) -> Iterator[Judgment]:
        for start in range(0, len(pairs), self.batch_size):
            batch = pairs[start:start + self.batch_size]
            scores = self.score([q.a for q in batch] + [q.b for q in batch], [q.prompt for q in batch] * 2)
            for q, sa, sb in zip(batch, scores[:len(batch)], scores[len(batch):], strict=True):
                p = self.p_a(sa, sb)
                if self.temperature == 0 and sa == sb:
                    yield Judgment(q.key, None, sa, sb, p)
                else:
                    yield Judgment(q.key, pair_rng(self.seed, q.key).random() < p, sa, sb, p)


class RewardModelJudge:
    """Scores prompt+response with a reward-model artifact (imports torch when used)."""

    def __init__(self, model_dir: str, model_id: str, batch_size: int = 32, max_length: int = 512):
        self.model_dir, self.model_id, self.batch_size, self.max_length = model_dir, model_id, batch_size, max_length

    def describe(self) -> dict[str, Any]:
        return {"type": "reward_model", "artifact": self.model_id}

    def report(self) -> JudgeReport:
        return JudgeReport()

    def judge(self, pairs: Sequence[PairQuery]) -> Iterator[Judgment]:
        from alignpipe.models.scoring import RewardScorer

        scorer = RewardScorer(self.model_dir, batch_size=self.batch_size, max_length=self.max_length)
        for start in range(0, len(pairs), self.batch_size):
            batch = pairs[start:start + self.batch_size]
            scores = scorer.score([q.prompt for q in batch] * 2, [q.a for q in batch] + [q.b for q in batch])
            for q, a, b in zip(batch, scores[:len(batch)], scores[len(batch):], strict=True):
                yield Judgment(q.key, None if a == b else a > b, a, b, None)
