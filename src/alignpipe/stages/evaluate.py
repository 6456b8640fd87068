"""evaluate — compare models on held-out prompts: RM score, gold score, KL to the reference, gold win rate.

Consumes (input names are the model names, params.models, default ["sft", "rlhf"]; the first is the baseline)
  `<model>`       each a HF causal LM directory (e.g. `sft: sft.model`, `rlhf: ppo.policy`). A models entry may
                  also name a collected matrix (`rlhf: ppo@*.policy` gives inputs `rlhf@seed=0`, `rlhf@seed=1`, ...):
                  each branch is evaluated as a model; branches that differ in their seed only (a seed matrix)
                  get a group row: mean ± sd over the replicates.
  `prompts`       held-out {"prompt": str | conversation} records (task.reviews' eval_prompts).
  `reward_model`  optional Rφ: normalized RM scores (the reward PPO optimized).
  `reference`     optional π_ref for the KL column; default: the baseline model.
Produces `out` (a report): metrics.json (every number below, per model), summary.md (the table and sample
responses side by side), responses.jsonl (every prompt with each model's response and scores). The manifest
summary carries a markdown `headline` table, which `alignpipe run` prints at the end.

Run alone:
    alignpipe stage run evaluate -i sft=sft/ -i rlhf=ppo/policy -i prompts=data/eval_prompts \\
        -i reward_model=rm/ -p gold_function=alignpipe.task:gold_score -o eval/

Method. Each model samples one response per prompt from softmax(logits/τ) (top_k=0, top_p=1, as PPO samples),
prompts in fixed batches whose seed depends only on (stage seed, batch index): every model draws with the same
random numbers (common random numbers), so identical models give identical responses and comparisons are less
noisy. Per model, over prompts (mean ± standard error, n − 1 in the variance):
- rm_score: Rφ's normalized score of the response tokens (scored at the last token, the EOS if emitted);
- gold: the gold function (params.gold_function, 'package.module:callable' taking the decoded responses and,
  with a second parameter, the prompts) — the default task's is VADER (alignpipe.task:gold_score);
- kl: Σ_t [log π(y_t) − log π_ref(y_t)] over the response tokens through the EOS, y ~ π, both logprobs under
  logits / τ: a Monte-Carlo estimate of KL(π ‖ π_ref) per response in nats (k1), the quantity PPO's KL
  penalty and target control — so use the ppo stage's temperature and max_new_tokens (both defaults match);
- win rate over the baseline (gold, and RM score if given), paired on the same prompt: a win counts 1, a tie ½,
  a loss 0; the rate is their mean and its 95% interval the Wilson score interval at n = prompts with
  successes = wins + ties/2 (ties shrink the variance, so the interval is slightly conservative with ties).
Temperature default 0.7, the ppo default. Tokenizers of all models, the reference and Rφ must agree (the KL and
the RM read the same token ids); checked before any compute.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from alignpipe.pipeline.context import StageContext
from alignpipe.pipeline.errors import StageFailed
from alignpipe.pipeline.matrix import split_name
from alignpipe.pipeline.stagedef import StageDef, StrictParams
from alignpipe.stages import _common

RESERVED = ("prompts", "reward_model", "reference")
Z95 = 1.959963984540054  # standard normal 97.5% quantile


class Params(StrictParams):
    models: list[str] = Field(default_factory=lambda: ["sft", "rlhf"], min_length=1)
    """names of the model inputs to compare; the first is the baseline of the win rates"""
    temperature: float = Field(default=0.7, gt=0)
    """sampling temperature τ (and of the KL's logprobs); match the ppo stage's"""
    max_new_tokens: int = Field(default=48, ge=1)
    """response length cap in tokens; match the ppo stage's"""
    batch_size: int = Field(default=32, ge=1)
    """prompts per generate call"""
    gold_function: str | None = None
    """'package.module:callable' gold scorer of the decoded responses; null = no gold columns"""
    max_prompts: int | None = Field(default=None, ge=1)
    """evaluate on the first N usable prompts only; null = all"""
    samples: int = Field(default=5, ge=0)
    """responses shown side by side in summary.md"""
    max_skip_fraction: float = Field(default=0.01, ge=0, le=1)
    """fail if more prompt records are invalid or too long for prompt + max_new_tokens"""


def model_inputs(models: list[str], inputs: list[str] | set[str]) -> dict[str, list[str]]:
    """Each params.models entry -> the inputs it names: itself, or the branches of a collected matrix
    (`rlhf` -> `rlhf@seed=0`, `rlhf@seed=1`, ... in input order); [] when neither is given."""
    return {m: [m] if m in inputs else [i for i in inputs if "@" in i and split_name(i)[0] == m] for m in models}


def check(p: Params, inputs: set[str]) -> list[str]:
    problems = []
    families = model_inputs(p.models, sorted(inputs))
    if len(set(p.models)) != len(p.models):
        problems.append(f"params.models: names repeat in {p.models}; name each model once")
    for name in p.models:
        if name in RESERVED:
            problems.append(f"params.models: {name!r} is reserved for another input ({', '.join(RESERVED)}); "
                            "rename the model input")
        elif not families[name]:
            problems.append(f"inputs.{name}: params.models names {name!r} but no input {name!r} is given; add "
                            f"`{name}: <stage>.<model output>` or change params.models")
    if "prompts" not in inputs:
        problems.append("inputs.prompts: missing required input 'prompts' (held-out {\"prompt\"} records)")
    for name in sorted(inputs - {n for f in families.values() for n in f} - set(RESERVED)):
        problems.append(f"inputs.{name}: not a model in params.models {p.models} nor one of {', '.join(RESERVED)}")
    return problems


# ---------------------------------------------------------------------------------------------------------------
# helpers: statistics (pure Python)


def mean_stderr(xs: list[float]) -> dict[str, float]:
    """{"mean", "stderr"}: the sample mean and its standard error (n − 1 variance; 0 for one value)."""
    n = len(xs)
    mean = sum(xs) / n
    var = sum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else 0.0
    return {"mean": mean, "stderr": math.sqrt(var / n)}


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion successes / n (successes may be fractional: ties count ½)."""
    if n < 1:
        raise ValueError("wilson_interval needs n >= 1")
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def win_rate(scores: list[float], baseline: list[float]) -> dict[str, float]:
    """Paired win rate of `scores` over `baseline` (same prompts): win 1, tie ½, loss 0, with a 95% Wilson CI."""
    if len(scores) != len(baseline) or not scores:
        raise ValueError(f"win_rate needs two equally long, non-empty lists, got {len(scores)} and {len(baseline)}")
    wins = sum(a > b for a, b in zip(scores, baseline, strict=True))
    ties = sum(a == b for a, b in zip(scores, baseline, strict=True))
    n = len(scores)
    low, high = wilson_interval(wins + ties / 2, n)
    return {"rate": (wins + ties / 2) / n, "ci_low": low, "ci_high": high, "wins": wins, "ties": ties,
            "losses": n - wins - ties, "n": n}


# ---------------------------------------------------------------------------------------------------------------
# helpers: models


@dataclass
class Responses:
    """One model's responses to every prompt and their per-response measurements."""

    texts: list[str] = field(default_factory=list)
    finished: list[bool] = field(default_factory=list)
    length: list[int] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    rm_score: list[float] = field(default_factory=list)
    gold: list[float] = field(default_factory=list)


def _load_tokenizers(ctx: StageContext, names: list[str]) -> Any:
    """The shared tokenizer of every model, the reference and Rφ, checked identical before any compute."""
    tokenizers = {n: _common.load_tokenizer(ctx, n) for n in names}
    _common.check_tokenizers(ctx, tokenizers)  # also refuses a tokenizer without a pad distinct from eos
    return tokenizers[names[0]]


def _sample_and_measure(  # noqa: PLR0913 — one model's pass needs each of these
    model: Any, reference: Any, scorer: Any | None, gold: Any | None, tokenizer: Any,
    prompts: list[tuple[Any, list[int]]], p: Params, seed: int,
) -> Responses:
    """Sample one response per prompt in seeded batches; KL to the reference, RM and gold scores per response."""
    import torch

    from alignpipe.models.forward import response_logprobs, sample_responses
    from alignpipe.rl.kl import kl_k1
    from alignpipe.train import sub_seed

    out = Responses()
    for b, start in enumerate(range(0, len(prompts), p.batch_size)):
        chunk = prompts[start:start + p.batch_size]
        batch = sample_responses(model, tokenizer, [ids for _, ids in chunk], temperature=p.temperature,
                                 top_p=1.0, max_new_tokens=p.max_new_tokens, seed=sub_seed(seed, "batch", b))
        mask = batch.response_mask.bool()  # (B, T) through the first EOS

        def logprobs(sub: Any) -> tuple[Any, Any]:  # rows of similar length, only the columns they use
            return tuple(response_logprobs(m, sub.input_ids, sub.attention_mask, sub.prompt_len, p.temperature,
                                           entropy=False)[0] for m in (model, reference))

        with torch.inference_mode():
            if model is reference:  # the baseline itself: KL 0, no forward
                kl = torch.zeros(len(chunk))
            else:
                logp, ref_logp = batch.map_by_length(logprobs)  # (B, T) each
                kl = kl_k1(logp, ref_logp, mask).sum(1)  # (B,) Σ_t k1_t
            if scorer is not None:
                out.rm_score += scorer.score_batch(batch).tolist()
        texts = tokenizer.batch_decode(batch.responses(), skip_special_tokens=True)
        if gold is not None:
            out.gold += [float(g) for g in gold(texts, [q for q, _ in chunk])]
        out.texts += texts
        out.finished += batch.ended(tokenizer.eos_token_id).tolist()
        out.length += batch.response_mask.sum(1).tolist()
        out.kl += kl.tolist()
    return out


def _model_metrics(r: Responses, base: Responses | None, artifact: str) -> dict[str, Any]:
    """Means ± standard errors, and win rates over `base` (None for the baseline itself)."""
    metrics: dict[str, Any] = {
        "artifact": artifact, "kl": mean_stderr(r.kl), "response_length": mean_stderr([float(x) for x in r.length]),
        "fraction_finished": sum(r.finished) / len(r.finished),
    }
    if r.rm_score:
        metrics["rm_score"] = mean_stderr(r.rm_score)
        if base is not None:
            metrics["rm_win_rate"] = win_rate(r.rm_score, base.rm_score)
    if r.gold:
        metrics["gold"] = mean_stderr(r.gold)
        if base is not None:
            metrics["gold_win_rate"] = win_rate(r.gold, base.gold)
    return metrics


def mean_sd(xs: list[float]) -> dict[str, float]:
    """{"mean", "sd"}: mean and sample standard deviation (n − 1; 0 for one value) across matrix branches."""
    mean = sum(xs) / len(xs)
    return {"mean": mean, "sd": math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0}


def seed_groups(families: dict[str, list[str]]) -> dict[str, list[str]]:
    """Replicates: the branches of a family that differ in their seed only ('rlhf@seed=0', 'rlhf@seed=1' ->
    'rlhf'; 'rlhf@kl_target=2,seed=0', ... -> 'rlhf@kl_target=2'); groups of two or more."""
    groups: dict[str, list[str]] = {}
    for family, members in families.items():
        for m in members:
            keys = split_name(m)[1]
            if "seed" in keys:
                rest = ",".join(f"{k}={v}" for k, v in keys.items() if k != "seed")
                groups.setdefault(f"{family}@{rest}" if rest else family, []).append(m)
    return {g: ms for g, ms in groups.items() if len(ms) > 1}


def group_metrics(models: dict[str, Any], families: dict[str, list[str]]) -> dict[str, Any]:
    """Per group of seed replicates: each measure's branch means summarized as mean ± sd."""
    groups = {}
    for name, members in seed_groups(families).items():
        g: dict[str, Any] = {"branches": members}
        for key in ("gold", "rm_score", "kl"):
            if all(key in models[m] for m in members):
                g[key] = mean_sd([models[m][key]["mean"] for m in members])
        for key in ("gold_win_rate", "rm_win_rate"):
            if all(key in models[m] for m in members):
                g[key] = mean_sd([models[m][key]["rate"] for m in members])
        groups[name] = g
    return groups


def _pm(stat: dict[str, float] | None, digits: int = 3) -> str:
    return "–" if stat is None else f"{stat['mean']:.{digits}f} ± {stat['stderr']:.{digits}f}"


def _headline(metrics: dict[str, Any]) -> str:
    """The markdown table `alignpipe run` prints: one row per model."""
    base = metrics["baseline"]
    rate_key = "gold_win_rate" if metrics["gold_function"] else "rm_win_rate"
    rate_label = "gold" if metrics["gold_function"] else "RM"
    lines = [f"| model | gold | RM score | KL to {metrics['reference']} (nats) | {rate_label} win rate vs {base} "
             f"[95% CI] | finished |",
             "|---|---|---|---|---|---|"]
    for name, m in metrics["models"].items():
        rate = m.get(rate_key)
        rate_s = "–" if rate is None else f"{rate['rate']:.2f} [{rate['ci_low']:.2f}, {rate['ci_high']:.2f}]"
        lines.append(f"| {name} | {_pm(m.get('gold'))} | {_pm(m.get('rm_score'))} | {_pm(m['kl'], 2)} | {rate_s} "
                     f"| {m['fraction_finished']:.0%} |")
    notes = [f"{metrics['prompts']} held-out prompts, τ = {metrics['temperature']:g}; mean ± standard error; "
             "win rate: ties count ½, Wilson interval.", *_facts_lines(metrics)]
    return "\n".join(lines) + _groups_table(metrics.get("groups") or {}) + "\n\n" + "\n\n".join(notes)


def _groups_table(groups: dict[str, Any]) -> str:
    if not groups:
        return ""
    def sd(g: dict[str, Any], key: str, digits: int = 3) -> str:
        return "–" if key not in g else f"{g[key]['mean']:.{digits}f} ± {g[key]['sd']:.{digits}f}"

    rows = ["| group | branches | gold | RM score | KL (nats) |", "|---|---|---|---|---|"]
    rows += [f"| {name} | {len(g['branches'])} | {sd(g, 'gold')} | {sd(g, 'rm_score')} | {sd(g, 'kl', 2)} |"
             for name, g in groups.items()]
    return "\n\n" + "\n".join(rows) + "\n\ngroups: seed replicates, mean ± standard deviation across them."


def _training_facts(ctx: StageContext, names: list[str]) -> dict[str, Any]:
    """What the inputs' manifests say about how they were trained: the RM's held-out accuracy and the ceiling its
    label noise allows, and each PPO-trained model's KL target, so the report can hold them against the results."""
    facts: dict[str, Any] = {}
    rm = ctx.inputs.get("reward_model")
    if rm is not None and "eval_accuracy" in rm.summary:
        facts["reward_model"] = {"accuracy": rm.summary["eval_accuracy"], "pairs": rm.summary.get("eval", {}).get(
            "pairs"), "ceiling": rm.summary.get("label_ceiling_accuracy")}
    for name in names:
        manifest = ctx.inputs[name].manifest or {}
        trained = manifest.get("params", {})
        if manifest.get("producer", {}).get("uses") == "ppo" and trained.get("kl_control") == "adaptive":
            facts[name] = {"kl_target": trained.get("kl_target")}
    return facts


def _facts_lines(metrics: dict[str, Any]) -> list[str]:
    out = []
    rm = metrics.get("trained", {}).get("reward_model")
    if rm:
        ceiling = f" (label-noise ceiling {rm['ceiling']:.3f})" if rm.get("ceiling") is not None else ""
        out.append(f"Reward model: held-out pairwise accuracy {rm['accuracy']:.3f} on {rm['pairs']} pairs{ceiling}.")
    for name, f in metrics.get("trained", {}).items():
        if name in metrics["models"] and f.get("kl_target") is not None:
            kl = metrics["models"][name]["kl"]["mean"]
            verdict = "within" if kl <= f["kl_target"] else "ABOVE"
            out.append(f"{name}: KL to {metrics['reference']} {kl:.2f} nats, {verdict} PPO's target of "
                       f"{f['kl_target']:g} nats.")
    return out


def _cell(text: str, r: Responses, i: int) -> str:
    scores = [f"gold {r.gold[i]:.2f}" if r.gold else "", f"RM {r.rm_score[i]:.2f}" if r.rm_score else ""]
    body = " ".join(text.replace("|", "\\|").splitlines()).strip() or "(empty)"  # every line break, not only \n
    tags = ", ".join(s for s in scores if s)
    return f"{body} ({tags})" if tags else body


def _summary_md(metrics: dict[str, Any], prompts: list[Any], results: dict[str, Responses], samples: int) -> str:
    names = list(results)
    rows = [f"| prompt | {' | '.join(names)} |", "|---|" + "---|" * len(names)]
    for i in range(min(samples, len(prompts))):
        cells = [_cell(results[n].texts[i], results[n], i) for n in names]
        prompt = " ".join(str(prompts[i]).replace("|", "\\|").splitlines())
        rows.append(f"| {prompt} | {' | '.join(cells)} |")
    return (f"# Evaluation: {' vs '.join(names)}\n\n{_headline(metrics)}\n\n## Sample responses\n\n"
            + "\n".join(rows) + "\n")


def _warn_on_mismatch(ctx: StageContext, p: Params, names: list[str]) -> None:
    """Say so when a PPO-trained model is evaluated at another temperature or length than it was trained at."""
    for name in names:
        manifest = ctx.inputs[name].manifest or {}
        if manifest.get("producer", {}).get("uses") != "ppo":
            continue
        trained = manifest.get("params", {})
        for key in ("temperature", "max_new_tokens"):
            if key in trained and trained[key] != getattr(p, key):
                ctx.log(f"warning: model {name!r} was trained by ppo with {key} {trained[key]}, is evaluated with "
                        f"{getattr(p, key)}; its KL here is not the quantity PPO controlled")


# ---------------------------------------------------------------------------------------------------------------


def run(ctx: StageContext) -> None:
    from alignpipe.data import parse_prompts
    from alignpipe.models.build import load_causal_lm
    from alignpipe.models.forward import use_fused_kernels  # the kernels ppo trained and measured KL with
    from alignpipe.models.scoring import RewardScorer
    from alignpipe.train import seed_everything

    p: Params = ctx.params

    # -- seed
    seed_everything(ctx.seed)

    # -- inputs: models (a collected matrix: each branch), reference and Rφ share one tokenizer, checked first
    families = model_inputs(p.models, list(ctx.inputs))
    names = [n for members in families.values() for n in members]
    ref_name = "reference" if "reference" in ctx.inputs else names[0]
    extra = [n for n in ("reference", "reward_model") if n in ctx.inputs]
    tokenizer = _load_tokenizers(ctx, [*names, *extra])
    gold = _common.score_function(ctx, "gold_function")
    _warn_on_mismatch(ctx, p, names)

    # -- data: held-out prompts that fit prompt + max_new_tokens into every model
    prompts, parse_skips, source = _common.read_dataset(ctx, "prompts", parse_prompts,
                                                        max_skip_fraction=p.max_skip_fraction)
    _common.require_chat_template(ctx, tokenizer, names[0], "prompts", prompts)
    limit = _common.position_limit(ctx, [*names, *extra])
    kept, len_skips = _common.fitting_prompts(ctx, tokenizer, prompts, limit=limit, max_new_tokens=p.max_new_tokens,
                                              source=str(source), max_skip_fraction=p.max_skip_fraction)
    kept = kept[:p.max_prompts] if p.max_prompts else kept
    if not kept:
        raise StageFailed(f"stage {ctx.stage!r} {_common.describe(ctx, 'prompts')}: no prompt fits the models")

    # -- model: the frozen reference and Rφ (each compared model is loaded in turn below)
    reference = use_fused_kernels(load_causal_lm(_common.model_dir(ctx, ref_name))).requires_grad_(False)
    scorer = RewardScorer(_common.model_dir(ctx, "reward_model")) if "reward_model" in ctx.inputs else None

    # -- loop: each model samples (same seeds for all) and is measured
    results: dict[str, Responses] = {}
    for k, name in enumerate(names):
        model = reference if name == ref_name else use_fused_kernels(
            load_causal_lm(_common.model_dir(ctx, name))).requires_grad_(False)
        results[name] = _sample_and_measure(model, reference, scorer, gold, tokenizer, kept, p, ctx.seed)
        ctx.progress(k + 1, len(names), "models")
        ctx.log(f"{name}: KL {mean_stderr(results[name].kl)['mean']:.3f} nats"
                + (f", gold {mean_stderr(results[name].gold)['mean']:.3f}" if gold else "")
                + (f", RM {mean_stderr(results[name].rm_score)['mean']:.3f}" if scorer else ""))

    # -- eval: per-model statistics and win rates over the baseline
    base = results[names[0]]
    metrics = {"baseline": names[0], "reference": ref_name, "prompts": len(kept), "temperature": p.temperature,
               "max_new_tokens": p.max_new_tokens, "seed": ctx.seed, "gold_function": p.gold_function,
               "reward_model": ctx.inputs["reward_model"].id if scorer else None,
               "skipped": _common.skip_summary(parse_skips, len_skips),
               "models": {n: _model_metrics(r, None if n == names[0] else base, ctx.inputs[n].id)
                          for n, r in results.items()},
               "trained": _training_facts(ctx, names)}
    groups = group_metrics(metrics["models"], families)
    if groups:  # only then: metrics.json of evaluations without a collected matrix stays byte-identical
        metrics["groups"] = groups

    # -- save
    from alignpipe.data.io import write_jsonl

    out = ctx.output_dir()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    prompt_list = [q for q, _ in kept]
    (out / "summary.md").write_text(_summary_md(metrics, prompt_list, results, p.samples), encoding="utf-8")
    write_jsonl(out / "responses.jsonl", [
        {"prompt": q, **{n: {"response": r.texts[i], "finished": r.finished[i], "kl": r.kl[i],
                             **({"rm_score": r.rm_score[i]} if r.rm_score else {}),
                             **({"gold": r.gold[i]} if r.gold else {})} for n, r in results.items()}}
        for i, q in enumerate(prompt_list)])
    ctx.annotate(headline=_headline(metrics), baseline=names[0], prompts=len(kept),
                 models={n: {k: v for k, v in m.items() if k != "artifact"} for n, m in metrics["models"].items()})


STAGE = StageDef(
    name="evaluate", version="3", params=Params, run=run, check=check,
    inputs=None,  # the model inputs are named by params.models; check() validates every name
    outputs={"out": "report"}, doc=__doc__ or "",
)
