"""Gather what a report shows from a workspace: the journal (runs, attempts, metrics) and artifact manifests.

Read-only and torch-free: it opens the journal read-only, reads manifests and the small JSON files of report
artifacts (an evaluate stage's metrics.json and responses.jsonl), and never loads a model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.journal import Attempt, Journal
from alignpipe.pipeline.runner import attempt_path
from alignpipe.pipeline.store import Store

SAMPLE_ROWS = 12  # held-out prompts shown side by side


@dataclass
class StageRecord:
    """One stage of one run: its attempts in the run, outputs, their manifests, its metric series."""

    name: str
    attempts: list[Attempt]  # this run's rows for the stage, cache hits included, in order
    manifests: dict[str, dict[str, Any]]  # output name -> manifest
    metrics: dict[str, list[tuple[int, float]]]
    produced: Attempt | None = None  # the executed attempt that made the outputs (an earlier run's when cached)
    uses: str = "?"

    @property
    def last(self) -> Attempt:
        return self.attempts[-1]

    @property
    def state(self) -> str:
        return self.last.status

    @property
    def cached(self) -> bool:
        return self.last.cache_hit

    @property
    def executed(self) -> list[Attempt]:
        return [a for a in self.attempts if not a.cache_hit]

    @property
    def outputs(self) -> dict[str, str]:
        return self.last.outputs

    @property
    def params(self) -> dict[str, Any]:
        return next(iter(self.manifests.values()), {}).get("params", {})

    def summary(self, output: str | None = None) -> dict[str, Any]:
        if output is not None:
            return self.manifests.get(output, {}).get("summary", {})
        return next(iter(self.manifests.values()), {}).get("summary", {})

    @property
    def seconds(self) -> float | None:
        """Wall time of the attempt that produced the outputs (for a cache hit: when it originally ran)."""
        a = self.produced
        return a.ended - a.started if a and a.ended and a.started else None


@dataclass
class Evaluation:
    """An evaluate stage's report artifact: metrics.json, the first responses, and per-model repetition."""

    stage: str
    metrics: dict[str, Any]
    responses: list[dict[str, Any]]
    repetition: dict[str, float] = field(default_factory=dict)


@dataclass
class RunData:
    workspace: Path
    run: dict[str, Any]
    stages: dict[str, StageRecord]
    evaluations: list[Evaluation]
    plan: list[str] = field(default_factory=list)  # every stage the run set out to run, in order

    @property
    def not_started(self) -> list[str]:
        """Planned stages with no attempt: skipped after a failure upstream, or still waiting."""
        return [n for n in self.plan if n not in self.stages]

    @property
    def seconds(self) -> float | None:
        end = self.run.get("ended")
        return end - self.run["started"] if end else None


def repeated_bigrams(text: str) -> float:
    """Fraction of a text's word bigrams that repeat an earlier one (0 with fewer than two bigrams)."""
    words = text.lower().split()
    grams = list(zip(words, words[1:], strict=False))
    return 1 - len(set(grams)) / len(grams) if len(grams) > 1 else 0.0


# ---------------------------------------------------------------------------------------------------------------


def open_journal(workspace: str | os.PathLike) -> Journal:
    return Journal(Path(workspace), readonly=True)


def collect(workspace: str | os.PathLike, run_ref: str | None = None, journal: Journal | None = None) -> RunData:
    """Everything a report of run `run_ref` (id, prefix; default the latest) needs, read from `workspace`."""
    ws = Path(workspace).resolve()
    own = journal is None
    journal = journal or open_journal(ws)
    try:
        run_id = journal.resolve_run(run_ref)
        run = journal.run_info(run_id)
        if run is None:  # resolve_run found it: only a concurrent delete could get here
            raise UserError(f"{ws}: run {run_id} vanished from the journal")
        store = Store(ws)
        stages = _stages(journal, store, run_id)
        evaluations = [e for s in stages.values() if (e := _evaluation(store, s)) is not None]
        return RunData(ws, run, stages, evaluations, journal.plan(run_id) or list(stages))
    finally:
        if own:
            journal.close()


def _stages(journal: Journal, store: Store, run_id: str) -> dict[str, StageRecord]:
    by_stage: dict[str, list[Attempt]] = {}
    for a in journal.attempts(run_id):
        by_stage.setdefault(a.stage, []).append(a)
    out = {}
    for name, attempts in by_stage.items():
        last = attempts[-1]
        manifests = {o: store.get(i).manifest for o, i in last.outputs.items() if store.has(i)}
        rec = StageRecord(name, attempts, manifests, journal.metrics(last.fingerprint) if last.fingerprint else {})
        rec.produced = _producing_attempt(journal, rec)
        rec.uses = _uses(store, rec)
        out[name] = rec
    return out


def _producing_attempt(journal: Journal, rec: StageRecord) -> Attempt | None:
    if not rec.cached:
        done = [a for a in rec.executed if a.status == "done"]
        return done[-1] if done else None
    producer = next(iter(rec.manifests.values()), {}).get("producer", {})
    if not producer.get("run_id"):
        return None
    done = [a for a in journal.attempts(producer["run_id"], producer.get("stage")) if a.status == "done"]
    return done[-1] if done else None


def _uses(store: Store, rec: StageRecord) -> str:
    """The stage type: from an output's manifest, else from the last attempt's task file (a failed stage)."""
    for m in rec.manifests.values():
        if m.get("producer", {}).get("uses"):
            return m["producer"]["uses"]
    last = rec.last
    task = attempt_path(store, str(last.fingerprint), last.run_id, last.attempt) / "task.json"
    try:
        return json.loads(task.read_text())["uses"]
    except (OSError, ValueError, KeyError):
        return "?"


def _evaluation(store: Store, rec: StageRecord) -> Evaluation | None:
    if rec.uses != "evaluate" or "out" not in rec.outputs or not store.has(rec.outputs["out"]):
        return None
    root = store.get(rec.outputs["out"]).path
    try:
        metrics = json.loads((root / "metrics.json").read_text(encoding="utf-8"))
        lines = (root / "responses.jsonl").read_text(encoding="utf-8").splitlines()
    except (OSError, ValueError):
        return None
    records = [json.loads(line) for line in lines if line.strip()]
    models = list(metrics.get("models", {}))
    repetition = {m: sum(repeated_bigrams(r[m]["response"]) for r in records) / max(1, len(records))
                  for m in models if records and m in records[0]}
    return Evaluation(rec.name, metrics, records[:SAMPLE_ROWS], repetition)
