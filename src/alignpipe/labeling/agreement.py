"""Agreement between annotators and the aggregation of their votes: pure functions over plain labels.

A vote is "a", "b" or "tie" (a skip is not a vote: it says nothing about the pair). Aggregation of one pair's
votes, the disagreement policy:

- the label with a strict majority of the votes (more than half) decides: "a" or "b" (or "tie" when most
  annotators called it a tie);
- with no strict majority the pair is "split" (e.g. one "a" and one "b", or "a", "b", "tie"); a split pair,
  like a tie, is counted and kept out of training: a reward model should not learn a preference its labelers
  did not share;
- P(a preferred) = (votes for a + half the ties) / votes: the soft label, kept as `p_chosen`.

Agreement (on "a"/"b"/"tie"): Fleiss' kappa over the pairs with two or more votes (with a varying number of
votes per pair, each pair's observed agreement uses its own count, which reduces to Fleiss' formula when every
pair has the same count); Cohen's kappa for every two annotators who voted on common pairs; and each annotator's
agreement with the majority of the *other* annotators on that pair (leave-one-out, so with overlap 2 it is
plain agreement with the other annotator, not inflated by one's own vote). Kappa is None where it is undefined
(fewer than two rated items, or chance agreement 1: everybody used one label).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

LABELS = ("a", "b", "tie")


def aggregate(votes: Sequence[str]) -> str | None:
    """'a', 'b' or 'tie' by strict majority, 'split' without one, None without votes."""
    if not votes:
        return None
    label, n = Counter(votes).most_common(1)[0]
    return label if 2 * n > len(votes) else "split"


def p_a(votes: Sequence[str]) -> float | None:
    """The share of votes for a, ties counting half."""
    if not votes:
        return None
    c = Counter(votes)
    return (c["a"] + 0.5 * c["tie"]) / len(votes)


def fleiss_kappa(table: Sequence[Sequence[int]]) -> float | None:
    """Fleiss' kappa from an items x categories table of vote counts; items with fewer than 2 votes are ignored."""
    rows = [r for r in table if sum(r) >= 2]
    if not rows:
        return None
    p_bar = sum((sum(c * c for c in r) - sum(r)) / (sum(r) * (sum(r) - 1)) for r in rows) / len(rows)
    total = sum(sum(r) for r in rows)
    p_e = sum((sum(r[j] for r in rows) / total) ** 2 for j in range(len(rows[0])))
    return None if p_e >= 1 else (p_bar - p_e) / (1 - p_e)


def cohen_kappa(first: Sequence[str], second: Sequence[str]) -> float | None:
    """Cohen's kappa of two annotators' labels on the same items (in the same order)."""
    if len(first) != len(second):
        raise ValueError(f"cohen_kappa: {len(first)} labels vs {len(second)}; give both annotators' labels on "
                         "the same items")
    n = len(first)
    if n == 0:
        return None
    p_o = sum(x == y for x, y in zip(first, second, strict=True)) / n
    c1, c2 = Counter(first), Counter(second)
    p_e = sum(c1[k] * c2[k] for k in c1) / (n * n)
    return None if p_e >= 1 else (p_o - p_e) / (1 - p_e)


def by_pair(judgments: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """pair -> annotator -> vote, from judgment records ({"pair", "annotator", "choice"}); skips dropped."""
    out: dict[str, dict[str, str]] = {}
    for j in judgments:
        if j["choice"] in LABELS:
            out.setdefault(j["pair"], {})[j["annotator"]] = j["choice"]
    return out


def majority_agreement(votes: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, Any]]:
    """annotator -> {"agree", "of", "rate"}: how often their vote equals the majority of the others' votes,
    over the pairs where the others have one."""
    out: dict[str, dict[str, Any]] = {}
    for pair_votes in votes.values():
        for who, mine in pair_votes.items():
            others = aggregate([v for w, v in pair_votes.items() if w != who])
            if others in LABELS:
                s = out.setdefault(who, {"agree": 0, "of": 0})
                s["agree"] += mine == others
                s["of"] += 1
    for s in out.values():
        s["rate"] = s["agree"] / s["of"]
    return dict(sorted(out.items()))


def pairwise_cohen(votes: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, Any]]:
    """"x|y" -> {"kappa", "items"} for every two annotators with common pairs."""
    names = sorted({w for v in votes.values() for w in v})
    out = {}
    for x, y in itertools.combinations(names, 2):
        common = [v for v in votes.values() if x in v and y in v]
        if common:
            out[f"{x}|{y}"] = {"kappa": cohen_kappa([v[x] for v in common], [v[y] for v in common]),
                               "items": len(common)}
    return out


def summarize(judgments: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Agreement figures for an admin page and an artifact summary."""
    votes = by_pair(judgments)
    table = [[Counter(v.values())[k] for k in LABELS] for v in votes.values()]
    outcomes = Counter(aggregate(list(v.values())) for v in votes.values())
    cohen = pairwise_cohen(votes)
    defined = [c["kappa"] for c in cohen.values() if c["kappa"] is not None]
    return {"pairs_with_votes": len(votes), "pairs_with_overlap": sum(len(v) >= 2 for v in votes.values()),
            "outcomes": {k: outcomes.get(k, 0) for k in (*LABELS, "split")},
            "fleiss_kappa": fleiss_kappa(table), "cohen_kappa": cohen,
            "cohen_kappa_mean": sum(defined) / len(defined) if defined else None,
            "agreement_with_majority": majority_agreement(votes)}
