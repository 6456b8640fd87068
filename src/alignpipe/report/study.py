"""The overoptimization study in a run: gold and proxy gains against d = √KL, for best-of-n and for PPO.

Points come from what the stages recorded:
- a `bon` stage's summary: n, its KL bound log n − (n−1)/n, the best responses' mean gold and RM score and the
  mean over all n samples per prompt (πSFT's own level on the same prompts, so each gain is paired);
- an `evaluate` stage's metrics.json: every model a `ppo` stage produced, with its held-out KL to the reference
  and its gold and RM score gains over the baseline model (πSFT) on the same prompts.
Each family is fitted with Gao et al.'s form (alignpipe.report.fit) when it has at least 3 points with d > 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from alignpipe.report.collect import RunData
from alignpipe.report.fit import Fit, fit

MIN_POINTS = 3


@dataclass(frozen=True)
class Point:
    label: str  # stage or model name
    d: float
    gold: float  # gain over the initial policy
    proxy: float
    gold_se: float = 0.0
    proxy_se: float = 0.0
    proxy_rm: str = ""  # the reward model artifact whose score is the proxy


@dataclass
class Family:
    form: str  # "bon" or "rl"
    points: list[Point]
    proxy: str = ""  # the proxy reward model: its stage's name (or artifact id) when the run has several
    fits: dict[str, Fit] = field(default_factory=dict)  # "gold" / "proxy" -> fit
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class Study:
    families: list[Family]


def bon_points(data: RunData) -> list[Point]:
    out = []
    for s in data.stages.values():
        m = s.summary()
        if s.uses != "bon" or "gold" not in m or "rm_score" not in m:
            continue
        out.append(Point(s.name, math.sqrt(max(m["kl_bound"], 0.0)), m["gold"]["mean"] - m["gold_all"]["mean"],
                         m["rm_score"]["mean"] - m["rm_score_all"]["mean"], m["gold"]["stderr"],
                         m["rm_score"]["stderr"], m.get("reward_model") or ""))
    return sorted(out, key=lambda p: p.d)


def rl_points(data: RunData) -> list[Point]:
    ppo_artifacts = {i for s in data.stages.values() if s.uses == "ppo" for i in s.outputs.values()}
    out = []
    for e in data.evaluations:
        models, base = e.metrics.get("models", {}), e.metrics.get("baseline")
        if base not in models or "gold" not in models[base] or "rm_score" not in models[base]:
            continue
        b = models[base]
        for name, m in models.items():
            if m.get("artifact") not in ppo_artifacts or "gold" not in m or "rm_score" not in m:
                continue
            out.append(Point(name, math.sqrt(max(m["kl"]["mean"], 0.0)), m["gold"]["mean"] - b["gold"]["mean"],
                             m["rm_score"]["mean"] - b["rm_score"]["mean"], m["gold"]["stderr"],
                             m["rm_score"]["stderr"], e.metrics.get("reward_model") or ""))
    return sorted(out, key=lambda p: p.d)


def _family(form: str, points: list[Point], proxy: str) -> Family:
    fam = Family(form, points, proxy)
    for what in ("gold", "proxy"):
        try:
            fam.fits[what] = fit(form, [p.d for p in points], [getattr(p, what) for p in points])
        except ValueError as e:
            fam.errors[what] = str(e)
    return fam


def study(data: RunData) -> Study | None:
    """The study's families — one per method and proxy reward model — each with its fits; None when the run
    holds no sweep to fit."""
    made_by = {i: s.name for s in data.stages.values() for i in s.outputs.values()}
    families = []
    for form, pts in (("bon", bon_points(data)), ("rl", rl_points(data))):
        by_rm: dict[str, list[Point]] = {}
        for p in pts:
            by_rm.setdefault(p.proxy_rm, []).append(p)
        for rm, members in by_rm.items():
            if sum(p.d > 0 for p in members) >= MIN_POINTS:
                label = made_by.get(rm, rm[:12]) if len(by_rm) > 1 else ""
                families.append(_family(form, members, label))
    return Study(families) if families else None
