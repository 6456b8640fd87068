"""The gold reward and the simulated human labeler of the embedded default task.

gold_score is VADER's compound sentiment in [-1, 1] (rule-based, offline, ~20 µs per text). The simulated
human prefers a over b with Bradley–Terry probability σ((g_a − g_b)/temperature), so its labels disagree
with the gold order at a known rate, and no reward model can beat `ceiling_accuracy` on its labels.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

DEFAULT_LABEL_TEMPERATURE = 0.25


@lru_cache(maxsize=1)
def _analyzer() -> Any:
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as e:
        raise ImportError("the default task's gold scorer needs vaderSentiment: pip install 'alignpipe[ml]'") from e
    return SentimentIntensityAnalyzer()


def gold_score(texts: Sequence[str]) -> list[float]:
    """VADER compound sentiment of each text, in [-1, 1] (higher = more positive)."""
    analyzer = _analyzer()
    return [float(analyzer.polarity_scores(t)["compound"]) for t in texts]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@dataclass(frozen=True)
class Label:
    """One simulated judgment of the pair (a, b)."""

    a_preferred: bool
    p_a: float  # P(a ≻ b) under the noise model
    gold_a: float
    gold_b: float


class SimulatedHuman:
    """A labeler with Bradley–Terry noise around the gold score: P(a ≻ b) = σ((g_a − g_b)/temperature).

    Draws come from its own `random.Random(seed)` in call order, so a fixed seed and call sequence give
    fixed labels. temperature → 0 is a perfect labeler; larger values are noisier.
    """

    def __init__(self, temperature: float = DEFAULT_LABEL_TEMPERATURE, seed: int = 0):
        if not temperature > 0:
            raise ValueError(f"SimulatedHuman temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self._rng = random.Random(seed)

    def prob_a_preferred(self, gold_a: float, gold_b: float) -> float:
        return _sigmoid((gold_a - gold_b) / self.temperature)

    def label(self, a: Sequence[str], b: Sequence[str]) -> list[Label]:
        """Judge each pair (a[i], b[i])."""
        if len(a) != len(b):
            raise ValueError(f"label() needs as many a-texts as b-texts, got {len(a)} and {len(b)}")
        out = []
        for ga, gb in zip(gold_score(a), gold_score(b), strict=True):
            p = self.prob_a_preferred(ga, gb)
            out.append(Label(a_preferred=self._rng.random() < p, p_a=p, gold_a=ga, gold_b=gb))
        return out

    def ceiling_accuracy(self, gold_a: Sequence[float], gold_b: Sequence[float]) -> float:
        """Best expected accuracy any predictor can reach on this labeler's labels for these pairs.

        The Bayes-optimal prediction is the gold order, right with probability max(p, 1 − p) per pair
        (0.5 for gold ties). The same number is the expected agreement of the labels with the gold order.
        """
        if len(gold_a) != len(gold_b) or not gold_a:
            raise ValueError("ceiling_accuracy needs two equally long, non-empty score lists")
        ps = (self.prob_a_preferred(x, y) for x, y in zip(gold_a, gold_b, strict=True))
        return sum(max(p, 1.0 - p) for p in ps) / len(gold_a)
