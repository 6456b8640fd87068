"""bon — best-of-n: sample n responses per prompt from a policy, keep the one the reward model scores highest.

The baseline Gao et al. (2022) compare RL with: no training, only selection. Its distance from the policy has a
closed form: KL(π_bon ‖ π) ≤ log n − (n − 1)/n (Stiennon et al. 2020, appendix G.3; exact when the n scores are
distinct), so a sweep over n traces gold and proxy reward against d = √KL without any KL estimate.

Consumes `policy` (usually πSFT: a HF causal LM directory), `reward_model` (Rφ, a reward stage's output) and
`prompts` ({"prompt": str | conversation} records, e.g. task.reviews' eval_prompts).
Produces `out`: a dataset, responses.jsonl, one record per prompt:
    {"prompt", "response": the best of n, "index": its sample, "rm_score", "gold" (with a gold function),
     "rm_scores": [n], "golds": [n], "finished": bool, "num_tokens": int}
Summary: n, kl_bound, and over prompts (mean ± standard error) the best responses' RM score and gold, and the
mean over all n samples of each prompt (the policy's own level on the same prompts: gains are paired).

Run alone:
    alignpipe stage run bon -i policy=sft/ -i reward_model=rm/ -i prompts=data/eval_prompts -p n=16 \\
        -p gold_function=alignpipe.task:gold_score -o bon16/

Method: generate's sampler (alignpipe.models.forward.sample_responses: softmax(logits/τ), top_k=0, top_p=1) in
fixed batches of prompts, batch b seeded with sub_seed(stage seed, b); Rφ's normalized score of each response (at
its EOS, the quantity PPO optimizes); the first highest-scoring sample wins ties. Temperature default 0.7, the ppo
and evaluate default, so best-of-n and PPO move away from the same π. Checkpointed every `checkpoint_every`
prompts; a restart continues from there.
Departures: Gao et al. estimate every n from one pool of samples (an unbiased estimator); here each n samples
afresh, which costs more samples and keeps each branch an ordinary cached stage.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field

from alignpipe.pipeline.context import StageContext
from alignpipe.pipeline.errors import StageFailed
from alignpipe.pipeline.stagedef import InputDef, StageDef, StrictParams
from alignpipe.stages import _common
from alignpipe.stages.evaluate import mean_stderr


class Params(StrictParams):
    n: int = Field(default=4, ge=1)
    """samples per prompt; the best by Rφ is kept"""
    temperature: float = Field(default=0.7, gt=0)
    """sampling temperature τ; match the ppo stage's to compare with PPO"""
    max_new_tokens: int = Field(default=48, ge=1)
    """response length cap in tokens"""
    batch_rows: int = Field(default=256, ge=1)
    """sampled rows per generate call: max(1, batch_rows // n) prompts each"""
    gold_function: str | None = None
    """'package.module:callable' gold scorer of the decoded responses; null = no gold columns"""
    max_prompts: int | None = Field(default=None, ge=1)
    """use the first N usable prompts only; null = all"""
    max_skip_fraction: float = Field(default=0.01, ge=0, le=1)
    """fail if more prompt records are invalid or too long for prompt + max_new_tokens"""
    checkpoint_every: int = Field(default=64, ge=1)
    """prompts between checkpoints (rounded up to whole batches)"""


# ---------------------------------------------------------------------------------------------------------------
# helpers


def kl_bound(n: int) -> float:
    """KL(best-of-n ‖ π) ≤ log n − (n − 1)/n nats."""
    return math.log(n) - (n - 1) / n


def best_record(prompt: Any, texts: list[str], scores: list[float], golds: list[float] | None,
                finished: list[bool], lengths: list[int]) -> dict[str, Any]:
    """One prompt's record: the first highest-scoring of its n samples, with every sample's scores."""
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    rec = {"prompt": prompt, "response": texts[best], "index": best, "rm_score": scores[best], "rm_scores": scores,
           "finished": finished[best], "num_tokens": lengths[best]}
    if golds is not None:
        rec |= {"gold": golds[best], "golds": golds}
    return rec


def summarize(records: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """Best-response and all-sample means over prompts (mean ± standard error), the KL bound and a headline."""
    out: dict[str, Any] = {"n": n, "kl_bound": kl_bound(n), "prompts": len(records),
                           "mean_length": sum(r["num_tokens"] for r in records) / len(records),
                           "fraction_finished": sum(r["finished"] for r in records) / len(records)}
    for key, many in (("rm_score", "rm_scores"), ("gold", "golds")):
        if key in records[0]:
            out[key] = mean_stderr([r[key] for r in records])
            out[f"{key}_all"] = mean_stderr([sum(r[many]) / len(r[many]) for r in records])
    gold = (f", gold {out['gold']['mean']:.3f} ± {out['gold']['stderr']:.3f} (all samples "
            f"{out['gold_all']['mean']:.3f})" if "gold" in out else "")
    out["headline"] = (f"best-of-{n}: RM {out['rm_score']['mean']:.3f} ± {out['rm_score']['stderr']:.3f} (all samples "
                       f"{out['rm_score_all']['mean']:.3f}){gold}, KL ≤ {out['kl_bound']:.2f} nats, "
                       f"{len(records)} prompts")
    return out


# ---------------------------------------------------------------------------------------------------------------


def run(ctx: StageContext) -> None:
    from alignpipe.data import parse_prompts
    from alignpipe.models.build import load_causal_lm
    from alignpipe.models.forward import sample_responses, use_fused_kernels
    from alignpipe.models.scoring import RewardScorer
    from alignpipe.train import seed_everything, sub_seed

    p: Params = ctx.params

    # -- seed (each batch samples with its own seed derived from this one)
    seed_everything(ctx.seed)

    # -- inputs: policy and Rφ share one tokenizer, checked before any compute
    _common.require_inputs(ctx, "policy", "reward_model", "prompts")
    tokenizers = {n: _common.load_tokenizer(ctx, n) for n in ("policy", "reward_model")}
    _common.check_tokenizers(ctx, tokenizers)
    tokenizer = tokenizers["policy"]
    gold = _common.score_function(ctx, "gold_function")

    # -- data: prompts that fit prompt + max_new_tokens into both models, in fixed batches
    prompts, parse_skips, source = _common.read_dataset(ctx, "prompts", parse_prompts,
                                                        max_skip_fraction=p.max_skip_fraction)
    _common.require_chat_template(ctx, tokenizer, "policy", "prompts", prompts)
    limit = _common.position_limit(ctx, ["policy", "reward_model"])
    kept, len_skips = _common.fitting_prompts(ctx, tokenizer, prompts, limit=limit, max_new_tokens=p.max_new_tokens,
                                              source=str(source), max_skip_fraction=p.max_skip_fraction)
    kept = kept[:p.max_prompts] if p.max_prompts else kept
    if not kept:
        raise StageFailed(f"stage {ctx.stage!r} {_common.describe(ctx, 'prompts')}: no prompt fits the models")
    per_call = max(1, p.batch_rows // p.n)
    starts = list(range(0, len(kept), per_call))

    # -- model: the policy samples, Rφ scores (both frozen)
    model = use_fused_kernels(load_causal_lm(_common.model_dir(ctx, "policy"))).requires_grad_(False)
    scorer = RewardScorer(_common.model_dir(ctx, "reward_model"))

    # -- loop: n samples per prompt, scored, the best kept; finished batches survive restarts
    def best_of_batch(b: int) -> list[dict[str, Any]]:
        import torch

        chunk = kept[starts[b]:starts[b] + per_call]
        batch = sample_responses(model, tokenizer, [ids for _, ids in chunk], n=p.n, temperature=p.temperature,
                                 max_new_tokens=p.max_new_tokens, seed=sub_seed(ctx.seed, "batch", b))
        with torch.inference_mode():
            scores = scorer.score_batch(batch).tolist()  # (B·n,) prompt-major
        texts = tokenizer.batch_decode(batch.responses(), skip_special_tokens=True)
        golds = [float(g) for g in gold(texts, [q for q, _ in chunk for _ in range(p.n)])] if gold else None
        finished = batch.ended(tokenizer.eos_token_id).tolist()
        lengths = batch.response_mask.sum(1).tolist()
        records = []
        for i, (prompt, _) in enumerate(chunk):
            rows = slice(i * p.n, (i + 1) * p.n)
            records.append(best_record(prompt, texts[rows], scores[rows], golds[rows] if golds else None,
                                       finished[rows], lengths[rows]))
        return records

    records = _common.resumable_records(ctx, len(starts), best_of_batch, every=p.checkpoint_every, total=len(kept),
                                        desc="prompts")

    # -- eval: best and all-sample means, the KL bound
    summary = summarize(records, p.n)
    ctx.log(summary["headline"])

    # -- save
    from alignpipe.data.io import write_jsonl

    write_jsonl(ctx.output_dir() / "responses.jsonl", records)
    ctx.annotate(**summary, policy=ctx.inputs["policy"].id, reward_model=ctx.inputs["reward_model"].id,
                 gold_function=p.gold_function, temperature=p.temperature, max_new_tokens=p.max_new_tokens,
                 skipped=_common.skip_summary(parse_skips, len_skips))


STAGE = StageDef(
    name="bon", version="1", params=Params, run=run,
    inputs={"policy": InputDef("model", doc="the policy to sample from (usually πSFT)"),
            "reward_model": InputDef("model", doc="Rφ: picks the best of n"),
            "prompts": InputDef("dataset", doc='{"prompt"} records: a file or a dataset dir')},
    outputs={"out": "dataset"}, doc=__doc__ or "", default_cpus=1.0,
)
