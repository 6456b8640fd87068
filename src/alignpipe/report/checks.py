"""Where a user should look: findings computed from a run's record (pure functions over RunData).

- a stage stopped on NaN/inf, failed, or needed retries;
- PPO's KL above its target (the last rollouts' mean, and the evaluation's held-out KL);
- the reward model's held-out accuracy indistinguishable from chance;
- response length or repetition climbing while the reward climbs: the common signs of reward hacking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from alignpipe.report.collect import Evaluation, RunData, StageRecord

Z95 = 1.959963984540054
LENGTH_RISE = 0.25  # relative rise of the mean response length that is worth a look
REPETITION_RISE = 0.05  # absolute rise of the repeated-bigram fraction over the baseline model
TAIL = 5  # rollouts averaged for "the end of training"
KL_SLACK = 1.1  # the adaptive controller oscillates around its target: flag a training KL 10% above it


@dataclass(frozen=True)
class Finding:
    level: str  # "error" or "warning"
    stage: str
    text: str


def findings(data: RunData) -> list[Finding]:
    out: list[Finding] = []
    for s in data.stages.values():
        out += _failures(s) + _ppo_kl(s) + _reward_chance(s) + _length_with_reward(s)
    for e in data.evaluations:
        out += _eval_kl(e) + _eval_length_and_repetition(e)
    return out


def _first_line(text: str | None) -> str:
    return next((line for line in (text or "").splitlines() if line.strip()), "no error recorded")


def _failures(s: StageRecord) -> list[Finding]:
    executed = s.executed
    nan = [a for a in executed if a.error and (" is NaN at step" in a.error or " is inf at step" in a.error)]
    if nan:
        line = next(ln for ln in nan[-1].error.splitlines() if " at step" in ln)
        return [Finding("error", s.name, f"stopped on a non-finite value: {line.strip()}")]
    if s.state == "failed":
        return [Finding("error", s.name, f"failed after {len(executed)} attempt(s): {_first_line(s.last.error)}")]
    if s.state == "done" and len(executed) > 1:
        return [Finding("warning", s.name, f"needed {len(executed)} attempts; earlier ones: "
                        + "; ".join(_first_line(a.error) for a in executed[:-1]))]
    return []


def tail_mean(points: list[tuple[int, float]], n: int = TAIL) -> float | None:
    vals = [v for _, v in points[-n:] if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def head_mean(points: list[tuple[int, float]], n: int = TAIL) -> float | None:
    vals = [v for _, v in points[:n] if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def _ppo_kl(s: StageRecord) -> list[Finding]:
    p = s.params
    if s.uses != "ppo" or p.get("kl_control") != "adaptive" or "kl" not in s.metrics:
        return []
    kl, target = tail_mean(s.metrics["kl"]), p.get("kl_target")
    if kl is None or target is None or kl <= KL_SLACK * target:
        return []
    return [Finding("warning", s.name, f"KL to the reference {kl:.2f} nats over the last {TAIL} rollouts, more "
                    f"than 10% above the target of {target:g}: the adaptive β could not hold it (a higher initial "
                    "beta or a shorter kl_horizon reacts sooner)")]


def _reward_chance(s: StageRecord) -> list[Finding]:
    summary = s.summary("model")
    acc, n = summary.get("eval_accuracy"), (summary.get("eval") or {}).get("pairs")
    if s.uses != "reward" or acc is None or not n:
        return []
    low = acc - Z95 * math.sqrt(max(acc * (1 - acc), 1e-12) / n)
    if low > 0.5:
        return []
    return [Finding("warning", s.name, f"reward model held-out accuracy {acc:.3f} on {n} pairs: its 95% interval "
                    f"reaches chance (lower bound {low:.3f}); PPO would optimize noise (more or cleaner pairs)")]


def _rise(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    a, b = head_mean(points), tail_mean(points)
    return None if a is None or b is None else (a, b)


def _length_with_reward(s: StageRecord) -> list[Finding]:
    if s.uses != "ppo" or "response_length" not in s.metrics or "score" not in s.metrics:
        return []
    length, score = _rise(s.metrics["response_length"]), _rise(s.metrics["score"])
    if not length or not score or length[0] <= 0 or score[1] <= score[0]:
        return []
    if (length[1] - length[0]) / length[0] <= LENGTH_RISE:
        return []
    return [Finding("warning", s.name, f"response length climbed {length[0]:.1f} → {length[1]:.1f} tokens "
                    f"(+{(length[1] / length[0] - 1):.0%}) while the score rose {score[0]:.2f} → {score[1]:.2f}: "
                    "check the samples for length or padding hacks")]


def _eval_kl(e: Evaluation) -> list[Finding]:
    out = []
    models = e.metrics.get("models", {})
    for name, facts in e.metrics.get("trained", {}).items():
        target = facts.get("kl_target") if isinstance(facts, dict) else None
        kl = models.get(name, {}).get("kl")
        if kl and target is not None and kl["mean"] - Z95 * kl["stderr"] > target:  # above it beyond noise
            out.append(Finding("warning", e.stage, f"{name}: held-out KL to {e.metrics.get('reference')} "
                               f"{kl['mean']:.2f} ± {kl['stderr']:.2f} nats, above PPO's target of {target:g}"))
    return out


def _eval_length_and_repetition(e: Evaluation) -> list[Finding]:
    base = e.metrics.get("baseline")
    models = e.metrics.get("models", {})
    if base not in models:
        return []
    out = []
    base_len = models[base]["response_length"]["mean"]
    for name, m in models.items():
        if name == base:
            continue
        length = m["response_length"]["mean"]
        if base_len > 0 and (length - base_len) / base_len > LENGTH_RISE:
            out.append(Finding("warning", e.stage, f"{name}: responses {length:.1f} tokens long vs {base_len:.1f} "
                               f"for {base} (+{length / base_len - 1:.0%}): longer answers can be a reward hack"))
        rep, base_rep = e.repetition.get(name), e.repetition.get(base)
        if rep is not None and base_rep is not None and rep - base_rep > REPETITION_RISE:
            out.append(Finding("warning", e.stage, f"{name}: {rep:.0%} of word bigrams repeat vs {base_rep:.0%} for "
                               f"{base}: repetition climbing with reward is a classic reward hack"))
    return out
