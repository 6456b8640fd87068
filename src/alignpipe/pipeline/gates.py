"""Quality gates: conditions on a stage's results that must hold before anything downstream runs.

    reward:
      gates: {eval_accuracy: ">= 0.7"}      # any number in the stage's output summaries; dots reach nested ones
    ppo:
      gates: {kl: "<= 8"}

A gate is checked on the summaries in the stage's output manifests, after the stage finished and on every cache
hit (gates are not part of the fingerprint: tightening or loosening one re-checks, it never retrains). A stage
whose gate fails is `rejected`: its artifact stays published and cached, so it can be inspected, but the run
counts the stage as failed and its descendants do not run.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping
from typing import Any

OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq,
       "!=": operator.ne}
GATE_RE = re.compile(r"^\s*(<=|>=|==|!=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


def parse_gate(condition: str) -> tuple[str, float]:
    """'>= 0.7' -> ('>=', 0.7); ValueError saying the expected form otherwise."""
    m = GATE_RE.match(str(condition))
    if not m:
        raise ValueError(f"gate {condition!r} is not a comparison; expected OP NUMBER with OP one of "
                         f"{', '.join(OPS)}, e.g. '>= 0.7'")
    return m.group(1), float(m.group(2))


def numbers(summary: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number in a (nested) summary, by dotted path."""
    out: dict[str, float] = {}
    for k, v in summary.items():
        key = f"{prefix}{k}"
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[key] = float(v)
        elif isinstance(v, Mapping):
            out.update(numbers(v, key + "."))
    return out


def check_gates(gates: Mapping[str, str], summaries: list[Mapping[str, Any]]) -> list[str]:
    """The failed gates as sentences ('eval_accuracy >= 0.7 failed: 0.612'); a metric no summary has, or a NaN,
    fails too. `summaries`: the stage's output summaries (the first that has a metric decides)."""
    values: dict[str, float] = {}
    for summary in reversed(summaries):
        values.update(numbers(summary))
    failed = []
    for metric, condition in gates.items():
        op, threshold = parse_gate(condition)
        if metric not in values:
            have = ", ".join(sorted(values)) or "none"
            failed.append(f"gate {metric} {op} {threshold:g}: the stage reported no number {metric!r} (it reported: "
                          f"{have})")
        elif math.isnan(values[metric]) or not OPS[op](values[metric], threshold):
            failed.append(f"gate {metric} {op} {threshold:g} failed: {metric} = {values[metric]:.4g}")
    return failed
