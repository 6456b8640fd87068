"""A workspace written through the real Journal and Store as `alignpipe run` writes them, for stage types that
take minutes to run for real: an RLHF-shaped run (reward, ppo, evaluate, and a NaN-stopped stage) whose numbers the
tests choose, so every finding the report can raise is exercised on known values."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignpipe.pipeline.journal import Attempt, Journal
from alignpipe.pipeline.store import Store

HOSTILE = '<script>alert("x")</script><img src="http://example.com/x.png">'


@dataclass
class StageRun:
    """What one stage did: `errors` are failed attempts before the last; with outputs None it ends failed."""

    uses: str
    outputs: dict[str, dict[str, str]] | None = None  # output name -> {file name: content}
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> "stage.output"
    params: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    seconds: float = 2.0


class Recorder:
    """Writes one run: each stage() call records its attempts, metrics and published outputs."""

    def __init__(self, ws: Path, pipeline: str = "rlhf-recorded"):
        self.ws, self.store = ws, Store(ws).ensure()
        self.journal = Journal(ws)
        self.run_id = self.journal.start_run(pipeline, "recorded.yaml", ["alignpipe", "run"])
        self.t = time.time()
        self.outputs: dict[str, dict[str, str]] = {}

    def _publish(self, name: str, s: StageRun, output: str, files: dict[str, str]) -> str:
        staging = self.ws / "tmp" / f"staging-{name}-{output}"
        staging.mkdir(parents=True)
        for fname, text in files.items():
            (staging / fname).write_text(text)
        refs = {k: self.outputs[v.split(".")[0]][v.split(".")[1]] for k, v in s.inputs.items()}
        meta = {"kind": "model", "producer": {"stage": name, "uses": s.uses, "version": "1", "output": output,
                                              "fingerprint": f"fp-{name}", "run_id": self.run_id},
                "inputs": {k: {"id": v} for k, v in refs.items()}, "params": s.params, "summary": s.summary}
        return self.store.publish(staging, meta).id

    def stage(self, name: str, s: StageRun) -> dict[str, str]:
        for k, (metric, values) in enumerate(s.metrics.items()):
            for step, v in enumerate(values, 1):
                self.journal.add_metrics(self.run_id, name, f"fp-{name}", step, {metric: v}, self.t + k)
        ids = {out: self._publish(name, s, out, files) for out, files in (s.outputs or {}).items()}
        attempts = [(e, "failed", {}) for e in s.errors]
        if s.outputs is not None:
            attempts.append((None, "done", ids))
        for n, (error, status, outs) in enumerate(attempts, 1):
            self.journal.record_attempt(Attempt(self.run_id, name, n, status, self.t, self.t + s.seconds,
                                                0 if error is None else 1, error, False, f"fp-{name}", outs, "host",
                                                None))
            self.t += s.seconds
        self.outputs[name] = ids
        return ids

    def end(self, status: str = "done") -> str:
        self.journal.end_run(self.run_id, status)
        self.journal.close()
        return self.run_id


def evaluation_files(models: dict[str, dict[str, Any]], responses: list[dict[str, Any]], baseline: str = "sft",
                     trained: dict | None = None) -> dict[str, str]:
    def stat(mean: float, se: float = 0.01) -> dict[str, float]:
        return {"mean": mean, "stderr": se}

    metrics = {"baseline": baseline, "reference": baseline, "prompts": len(responses), "temperature": 0.7,
               "models": {n: {"artifact": m.get("artifact", "x"), "gold": stat(m["gold"]), "rm_score": stat(m["rm"]),
                              "kl": stat(m["kl"], 0.1), "response_length": stat(m.get("length", 20.0)),
                              "fraction_finished": 1.0} for n, m in models.items()},
               "trained": trained or {}}
    return {"metrics.json": json.dumps(metrics),
            "responses.jsonl": "".join(json.dumps(r) + "\n" for r in responses)}


def rlhf_run(ws: Path) -> str:
    """sft → reward (accuracy 0.52 on 50 pairs) → ppo (KL 9 vs target 6, length 10 → 30) → evaluate; and a
    `broken` stage stopped by a NaN loss after one retry."""
    r = Recorder(ws)
    r.stage("sft", StageRun("sft", {"model": {"w.bin": "sft"}}, metrics={"loss": [2.0, 1.5, 1.2], "eval_loss": [1.3]}))
    r.stage("reward", StageRun("reward", {"model": {"w.bin": "rm"}}, {"model": "sft.model"}, summary={
        "eval_accuracy": 0.52, "eval": {"pairs": 50, "calibration": {"ece": 0.04, "bins": [
            {"p_mean": 0.55, "accuracy": 0.5, "count": 30}, {"p_mean": 0.65, "accuracy": 0.6, "count": 20}]}}},
        metrics={"loss": [0.7, 0.69], "accuracy": [0.5, 0.55]}))
    ppo = r.stage("ppo", StageRun(
        "ppo", {"policy": {"w.bin": "pi"}, "value": {"w.bin": "v"}}, {"policy": "sft.model", "reward_model":
                                                                     "reward.model"},
        params={"kl_control": "adaptive", "kl_target": 6.0},
        metrics={"kl": [1, 3, 5, 8, 9, 9, 9, 9, 9, 9], "score": [0, 0.5, 1, 1.5, 2, 2, 2, 2, 2, 2],
                 "response_length": [10, 10, 10, 10, 10, 30, 30, 30, 30, 30], "gold": [0.1] * 10}))
    responses = [{"prompt": f"Review of item {i}:", "sft": {"response": "It is fine.", "gold": 0.1, "rm_score": 0.0},
                  "rlhf": {"response": f"great great great great great great {HOSTILE}", "gold": 0.5,
                           "rm_score": 2.0}} for i in range(3)]
    files = evaluation_files({"sft": {"gold": 0.1, "rm": 0.0, "kl": 0.0, "length": 10.0},
                              "rlhf": {"gold": 0.5, "rm": 2.0, "kl": 8.5, "length": 30.0, "artifact": ppo["policy"]}},
                             responses, trained={"rlhf": {"kl_target": 6.0}})
    r.stage("evaluate", StageRun("evaluate", {"out": files}, {"sft": "sft.model", "rlhf": "ppo.policy"}))
    r.stage("broken", StageRun("sft", errors=(
        "exited with code 1\nRuntimeError: boom",
        "exited with code 2\nloss is NaN at step 7; stopped before the optimizer applied it, no checkpoint had been "
        "written yet.")))
    return r.end("failed")


GOLD_BON, GOLD_RL = (0.5, 0.1), (0.4, 0.15)  # (α, β) the recorded study's gold gains follow exactly


def study_run(ws: Path, bon_proxies: tuple[str, ...] = ("",)) -> str:
    """A sweep as the overoptimization example records it: bon@n=… summaries and an evaluate of ppo@kl_target=…
    branches, whose gold gains follow Gao's forms with GOLD_BON / GOLD_RL exactly and proxy gains 2·d."""
    import math

    r = Recorder(ws, "overoptimization")
    r.stage("sft", StageRun("sft", {"model": {"w.bin": "sft"}}))
    for rm in bon_proxies:  # `bon_proxies`: reward model ids, one bon sweep each
        for n in (1, 2, 4, 8, 16, 32):
            d = math.sqrt(math.log(n) - (n - 1) / n)
            a, b = GOLD_BON
            summary = {"n": n, "kl_bound": d * d, "gold": {"mean": 0.1 + d * (a - b * d), "stderr": 0.02},
                       "gold_all": {"mean": 0.1, "stderr": 0.02}, "rm_score": {"mean": 2 * d, "stderr": 0.05},
                       "rm_score_all": {"mean": 0.0, "stderr": 0.05}, "reward_model": rm}
            name = f"bon@n={n}" + (f",rm={rm}" if rm else "")
            r.stage(name, StageRun("bon", {"out": {"r.jsonl": f"{n}{rm}"}}, {"policy": "sft.model"},
                                   summary=summary))
    models = {"sft": {"gold": 0.1, "rm": 0.0, "kl": 0.0}}
    for target in (1, 2, 4, 8):
        ids = r.stage(f"ppo@kl_target={target}", StageRun("ppo", {"policy": {"w.bin": f"pi{target}"}},
                                                          {"policy": "sft.model"}))
        d = math.sqrt(target * 0.9)
        a, b = GOLD_RL
        models[f"rlhf@kl_target={target}"] = {"gold": 0.1 + d * (a - b * math.log(d)), "rm": 2 * d, "kl": d * d,
                                              "artifact": ids["policy"]}
    inputs = {"sft": "sft.model", **{f"rlhf@kl_target={t}": f"ppo@kl_target={t}.policy" for t in (1, 2, 4, 8)}}
    r.stage("evaluate", StageRun("evaluate", {"out": evaluation_files(models, [])}, inputs))
    return r.end()
