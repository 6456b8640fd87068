"""label — candidates -> preference pairs (prompt, chosen, rejected) through a judge.

Consumes `candidates` (from generate: candidates.jsonl, one record per prompt: {"prompt", "responses": [...]}),
or with `judge: import` an existing preference file (`preferences`: JSONL/JSON/Parquet, prompt/chosen/rejected
or chat-format chosen/rejected conversations). `judge: reward_model` also needs a `reward_model` artifact,
`judge: llm` a causal LM (`judge_model`).
Produces `out`: a dataset directory with preferences.jsonl ({"prompt", "chosen", "rejected", "chosen_score",
"rejected_score", "p_chosen", "key"}) and counts in the manifest summary; judges that keep raw answers add a
judgments.jsonl (people: who, when, dwell time, the order shown; LLMs: their raw answers).

Judges: `function` (a scoring function; the default simulated human), `reward_model`, `import`, `human` (people
on a labeling page the stage serves and waits on: alignpipe.labeling; address from ALIGNPIPE_LABEL_HOST /
ALIGNPIPE_LABEL_PORT, default 127.0.0.1 and the previous run's port), `llm` (a local causal LM's P(A) vs P(B),
both orders averaged) and `openai` (any OpenAI-compatible chat-completions endpoint).

Run alone:
    alignpipe stage run label -i candidates=DIR -p judge=function -p noise_temperature=0.25 -o prefs/
    alignpipe stage run label -i candidates=DIR -p judge=human -p 'human={overlap: 2}' -o prefs/

Pairs: with K responses per prompt, `pairing: adjacent` makes K/2 disjoint pairs (0,1), (2,3)...; `all` makes
every one of the K(K-1)/2 pairs (InstructGPT's ranking-to-pairs). Skipped and counted: pairs whose responses
are identical (duplicate), empty (empty), pairs seen before (duplicate_pair) and judge ties (tie). More than
`max_skip_fraction` skipped is an error: a silent mostly-empty preference set would train a meaningless RM.
Judgments are checkpointed every `checkpoint_every`, so a slow judge never loses work; the human judge's
checkpoint is its SQLite file (every judgment committed before the page acknowledges it). `max_pairs` puts only
the first N candidate pairs up for judging; pairs a judge leaves out (nobody voted before "finish") are counted
as `unlabeled`, apart from the skips.
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Literal

from pydantic import Field

from alignpipe.judges import FunctionJudge, Judge, JudgeReport, Judgment, PairQuery, RewardModelJudge
from alignpipe.labeling.params import HumanParams, LLMParams, OpenAIParams
from alignpipe.pipeline.context import StageContext
from alignpipe.pipeline.errors import StageFailed
from alignpipe.pipeline.stagedef import InputDef, StageDef, StrictParams
from alignpipe.stages import _common


class Params(StrictParams):
    judge: Literal["function", "reward_model", "import", "human", "llm", "openai"] = "function"
    """who labels: a scoring function (default: the simulated human), a reward-model artifact, an import,
    people on a labeling page, a local causal LM, or an OpenAI-compatible chat endpoint"""
    function: str = "alignpipe.task:gold_score"
    """judge=function: 'package.module:callable' scoring a list of responses (optionally with their prompts)"""
    noise_temperature: float = Field(default=0.25, ge=0)
    """judge=function: Bradley-Terry label noise P(a>b)=sigmoid((s_a-s_b)/T); 0 = noiseless (ties abstain)"""
    pairing: Literal["adjacent", "all"] = "adjacent"
    """which pairs of a prompt's K responses to judge"""
    max_skip_fraction: float = Field(default=0.5, ge=0, le=1)
    """fail if more than this fraction of candidate pairs is skipped (empty, duplicate, tie)"""
    checkpoint_every: int = Field(default=500, ge=1)
    """judgments between checkpoints"""
    max_pairs: int | None = Field(default=None, ge=1)
    """judge only the first N candidate pairs (after dropping empty and duplicate ones); None: all"""
    human: HumanParams = HumanParams()
    """judge=human: overlap, guidelines, lease time"""
    llm: LLMParams = LLMParams()
    """judge=llm: the pairwise template and answer tokens"""
    openai: OpenAIParams = OpenAIParams()
    """judge=openai: endpoint, model, key variable, retries, rate limit, concurrency, prices"""


def check(p: Params, inputs: set[str]) -> list[str]:
    problems = []
    if p.judge == "import" and "preferences" not in inputs:
        problems.append("inputs: judge 'import' needs an input 'preferences' (a prompt/chosen/rejected file)")
    if p.judge != "import" and "candidates" not in inputs:
        problems.append(f"inputs: judge {p.judge!r} needs an input 'candidates' (a generate stage's output)")
    if p.judge == "reward_model" and "reward_model" not in inputs:
        problems.append("inputs: judge 'reward_model' needs an input 'reward_model' (a reward stage's output)")
    if p.judge == "llm" and "judge_model" not in inputs:
        problems.append("inputs: judge 'llm' needs an input 'judge_model' (a causal LM: a model artifact or path)")
    if p.judge == "openai" and not p.openai.model:
        problems.append("params.openai.model: judge 'openai' needs the endpoint's model name")
    for name, default in (("human", HumanParams()), ("llm", LLMParams()), ("openai", OpenAIParams())):
        if p.judge != name and getattr(p, name) != default:
            problems.append(f"params.{name}: set, but only judge {name!r} reads it (judge is {p.judge!r}); "
                            f"remove it or set judge: {name}")
    return problems


# ---------------------------------------------------------------------------------------------------------------
# helpers


def make_pairs(records: list[dict], pairing: str) -> tuple[list[PairQuery], dict[str, int]]:
    """Candidate pairs, with skipped ones counted by reason."""
    skipped = {"empty": 0, "duplicate": 0, "duplicate_pair": 0}
    seen: set[str] = set()
    out = []
    for i, rec in enumerate(records):
        resp = rec["responses"]
        idx = (list(itertools.combinations(range(len(resp)), 2)) if pairing == "all"
               else [(j, j + 1) for j in range(0, len(resp) - 1, 2)])
        for a, b in idx:
            ra, rb = resp[a], resp[b]
            if not ra.strip() or not rb.strip():
                skipped["empty"] += 1
            elif ra.strip() == rb.strip():
                skipped["duplicate"] += 1
            else:
                ident = json.dumps([rec["prompt"], sorted([ra, rb])])
                if ident in seen:
                    skipped["duplicate_pair"] += 1
                    continue
                seen.add(ident)
                out.append(PairQuery(f"{i}:{a}:{b}", rec["prompt"], ra, rb))
    return out, skipped


def _as_record(q: PairQuery, j: Judgment) -> dict:
    a_wins = bool(j.a_preferred)
    return {"key": q.key, "prompt": q.prompt, "chosen": q.a if a_wins else q.b, "rejected": q.b if a_wins else q.a,
            "chosen_score": j.score_a if a_wins else j.score_b, "rejected_score": j.score_b if a_wins else j.score_a,
            "p_chosen": None if j.p_a is None else (j.p_a if a_wins else 1 - j.p_a)}


def _import(ctx: StageContext, p: Params) -> None:
    from alignpipe.data import parse_preferences

    prefs, skips, _ = _common.read_dataset(ctx, "preferences", parse_preferences,
                                           max_skip_fraction=p.max_skip_fraction,
                                           preferred=(_common.PREFERENCES_FILE,))
    seen, rows, dup = set(), [], 0
    for i, pr in enumerate(prefs):
        ident = json.dumps([pr.prompt, pr.chosen, pr.rejected])
        if ident in seen:
            dup += 1
            continue
        seen.add(ident)
        rows.append({"key": str(i), "prompt": pr.prompt, "chosen": pr.chosen, "rejected": pr.rejected,
                     "chosen_score": None, "rejected_score": None, "p_chosen": None})
    _write(ctx, rows, {"judge": {"type": "import", "source": ctx.inputs["preferences"].id},
                       "skipped": {**skips.summary()["by_reason"], "duplicate_pair": dup}})


def _write(ctx: StageContext, rows: list[dict], summary: dict, report: JudgeReport | None = None) -> None:
    from alignpipe.data.io import write_jsonl

    write_jsonl(ctx.output_dir() / _common.PREFERENCES_FILE, rows)
    for name, extra in (report.files if report else {}).items():
        write_jsonl(ctx.output_dir() / name, extra)
    ctx.annotate(pairs=len(rows), format="preferences", **{**summary, **(report.summary if report else {})})
    ctx.log(f"{len(rows)} preference pairs; skipped {summary.get('skipped')}")


def _with_raw_answers(report: JudgeReport, pairs: list[PairQuery], done: dict[str, dict]) -> JudgeReport:
    """Raw answers (from every attempt: they live in the checkpointed judgments) as raw_answers.jsonl, and their
    token usage and cost summed into the summary."""
    raw = [{"key": q.key, **done[q.key]["raw"]} for q in pairs if "raw" in done.get(q.key, {})]
    if not raw:
        return report
    usage: dict[str, float] = {}
    for r in raw:
        for k, v in r.get("usage", {}).items():
            usage[k] = usage.get(k, 0) + v
    return JudgeReport({**report.summary, **({"usage": usage} if usage else {})},
                       {**report.files, "raw_answers.jsonl": raw})


def _make_judge(ctx: StageContext, p: Params) -> Judge:
    if p.judge == "function":
        try:
            return FunctionJudge(p.function, p.noise_temperature, ctx.seed)
        except ValueError as e:
            raise StageFailed(f"stage {ctx.stage!r} params.function: {e}") from None
    if p.judge == "human":
        from alignpipe.labeling.judge import HumanJudge

        port = os.environ.get("ALIGNPIPE_LABEL_PORT")
        settings = {**p.human.model_dump(), "seed": ctx.seed, "title": ctx.stage}
        return HumanJudge(ctx.work_dir, settings=settings, host=os.environ.get("ALIGNPIPE_LABEL_HOST", "127.0.0.1"),
                          port=int(port) if port else None, notice=ctx.notice,
                          progress=lambda done, total: ctx.progress(done, total, "judgments"))
    if p.judge == "llm":
        from alignpipe.labeling.llm_judge import LocalLMJudge

        lm = ctx.inputs["judge_model"]
        return LocalLMJudge(str(lm.path), lm.id, p.llm)
    if p.judge == "openai":
        from alignpipe.labeling.openai_judge import OpenAIJudge

        return OpenAIJudge(p.openai, stage=ctx.stage)
    rm = ctx.inputs["reward_model"]
    return RewardModelJudge(str(rm.path), rm.id)


def _judge_rest(ctx: StageContext, judge: Judge, pairs: list[PairQuery], done: dict[str, dict], every: int) -> None:
    """Judge the pairs not in `done`, adding to it; a checkpoint every `every` judgments, and one on a failure (a
    judge that fails half-way, an endpoint gone, keeps what it was paid for)."""
    todo = [q for q in pairs if q.key not in done]
    saved = len(done)

    def save() -> None:
        ctx.checkpoints.save(len(done), lambda d: (d / "judgments.json").write_text(json.dumps(done)))

    try:
        for n, j in enumerate(judge.judge(todo), start=1):
            done[j.key] = {"a_preferred": j.a_preferred, "score_a": j.score_a, "score_b": j.score_b, "p_a": j.p_a}
            if j.raw is not None:
                done[j.key]["raw"] = j.raw
            if n % every == 0:
                save()
                saved = len(done)
            ctx.progress(len(done), len(pairs), "pairs judged")
    except Exception:
        if len(done) > saved:
            save()
        raise


# ---------------------------------------------------------------------------------------------------------------


def run(ctx: StageContext) -> None:
    p: Params = ctx.params
    if p.judge == "import":
        _import(ctx, p)
        return

    # -- inputs -> candidate pairs
    records, _ = _common.read_candidates(ctx, "candidates")
    pairs, skipped = make_pairs(records, p.pairing)
    not_offered = len(pairs[p.max_pairs:]) if p.max_pairs else 0
    pairs = pairs[:p.max_pairs] if p.max_pairs else pairs
    judge = _make_judge(ctx, p)

    # -- resume: judgments already made survive restarts
    done: dict[str, dict] = {}
    ckpt = ctx.checkpoints.latest()
    if ckpt:
        done = json.loads((ckpt.path / "judgments.json").read_text())
        ctx.log(f"resuming with {len(done)} judgments from checkpoint {ckpt.step}")

    # -- judge the rest, checkpointing as judgments arrive
    _judge_rest(ctx, judge, pairs, done, p.checkpoint_every)

    # -- assemble, count, refuse a mostly-skipped result
    rows, ties, agree, scored, unlabeled = [], 0, 0, 0, 0
    p_max = []
    for q in pairs:
        j = done.get(q.key)
        if j is None:
            unlabeled += 1
            continue
        if j["a_preferred"] is None:
            ties += 1
            continue
        judgment = Judgment(q.key, j["a_preferred"], j["score_a"], j["score_b"], j["p_a"])
        rows.append(_as_record(q, judgment))
        if j["score_a"] is not None and j["score_a"] != j["score_b"]:
            agree += (j["score_a"] > j["score_b"]) == j["a_preferred"]
            scored += 1
        if j["p_a"] is not None:
            p_max.append(max(j["p_a"], 1 - j["p_a"]))
    skipped["tie"] = ties
    if unlabeled and not rows:
        raise StageFailed(f"stage {ctx.stage!r}: the judge labeled none of the {len(pairs)} pairs; nothing to train "
                          "on. Label some pairs before finishing")
    total = len(rows) + sum(skipped.values())
    if total == 0 or sum(skipped.values()) / total > p.max_skip_fraction:
        raise StageFailed(f"stage {ctx.stage!r}: {sum(skipped.values())} of {total} candidate pairs skipped "
                          f"({skipped}); more than max_skip_fraction={p.max_skip_fraction}. Generate more diverse "
                          "responses (temperature, K) or raise max_skip_fraction")
    summary = {"judge": judge.describe(), "skipped": skipped, "pairing": p.pairing,
               "unlabeled": unlabeled, "not_offered": not_offered,
               "label_agreement_with_scores": agree / scored if scored else None,
               "ceiling_accuracy": sum(p_max) / len(p_max) if p_max else None}
    _write(ctx, rows, summary, _with_raw_answers(judge.report(), pairs, done))


STAGE = StageDef(
    name="label", version="1", params=Params, run=run,
    inputs={"candidates": InputDef("dataset", required=False, doc="a generate stage's output"),
            "preferences": InputDef("dataset", required=False, doc="judge=import: a preference file"),
            "reward_model": InputDef("model", required=False, doc="judge=reward_model: an RM artifact"),
            "judge_model": InputDef("model", required=False, doc="judge=llm: a causal LM (HF directory)")},
    outputs={"out": "dataset"}, check=check, doc=__doc__ or "",
)
