"""reward — train the reward model Rφ on preference pairs and normalize it on πSFT samples.

Consumes `model`: πSFT (a HF causal LM directory), whose backbone initializes the RM; `data`: preference pairs
{"prompt", "chosen", "rejected"} (label's preferences.jsonl, or any format alignpipe.data.parse_preferences
accepts), a file or a dataset directory; optional `calibration`: a generate output (candidates.jsonl) of πSFT
samples for the normalization — without it, the distinct responses of the preference data are used (right
when those pairs were sampled from πSFT, as label's are; give `calibration` for imported preferences).
Produces `model`: Rφ, a plain HF AutoModelForSequenceClassification directory (num_labels=1) with the
tokenizer, with the normalization S = gain·(raw + bias) folded into the weights on publish (score head, and the
final norm's bias for the offset where there is one: GPT-2), so `AutoModelForSequenceClassification` — TRL, or
any consumer — outputs S itself; whatever could not be folded (Llama's offset: RMSNorm has no bias) stays in
config.json `alignpipe_reward_normalization` (S = raw + bias; alignpipe.models.scoring.RewardScorer applies it).
Summary: held-out pairwise accuracy (ties count ½), loss, mean chosen/rejected score, margin statistics and
histogram (normalized units), calibration bins (the Bradley-Terry probability vs how often the RM was right), the
label noise ceiling when the preference artifact records one, the normalization and the calibration set it came from.

Run alone:
    alignpipe stage run reward -i model=sft/ -i data=prefs/ -i calibration=candidates/ -o rm/

Method (PPO.md section G): the LM head is replaced by a scalar head N(0, 1/√(d+1)); the score is read at the last
non-pad token of prompt + response + EOS, with position ids from the mask; loss −logsigmoid(r_w − r_l − margin) +
center_coef·(r_w + r_l)² (alignpipe.rl.losses), a mean over pairs; AdamW, linear warmup/decay, one epoch by default
(RMs overfit after one); batches group pairs of similar length; optional bf16 autocast (`precision`). GPT-2 and
Llama RMs train on one row per pair — the prompt computed once, each response seeing the prompt and itself — and
run their last layer at the pooled tokens only (alignpipe.models.lean.pair_scores: the same scores and gradients as
separate rows, ~1.5× the pairs/s in-process). Then bias = −mean and gain = 1/std (population std; gain 1 with
normalize_std false) of raw scores on the calibration responses, so πSFT samples score mean 0, std 1 (PPO.md item
13). Checks before compute: pad ≠ eos (added and logged otherwise), EOS exists, chat template for chat data, the
calibration samples come from this πSFT (a warning otherwise).
Departures: InstructGPT trained a 6B RM on all K-choose-2 comparisons of a prompt as one batch element; we
treat pairs independently (label's `pairing: all` produces the comparisons). No dropout.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import Field

from alignpipe.pipeline.context import StageContext
from alignpipe.pipeline.errors import StageFailed
from alignpipe.pipeline.stagedef import InputDef, StageDef
from alignpipe.stages import _common
from alignpipe.stages._params import LoopParams, LoraParams

MARGIN_EDGES = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)  # histogram of normalized chosen − rejected margins


class Params(LoopParams, LoraParams):
    epochs: int = Field(default=1, ge=1)
    """passes over the training pairs (ignored when `steps` is set)"""
    batch_size: int = Field(default=16, ge=1)
    """preference pairs per step (2× rows through the model)"""
    lr: float = Field(default=3e-4, gt=0)
    """peak AdamW learning rate"""
    warmup_steps: int = Field(default=0, ge=0)
    """linear warmup steps (capped at the total)"""
    max_len: int | None = Field(default=None, ge=2)
    """longest prompt + response in tokens (longer pairs are skipped); default: the model's max positions"""
    margin: float = Field(default=0.0, ge=0)
    """m in −logsigmoid(r_w − r_l − m): demand chosen beat rejected by at least m"""
    center_coef: float = Field(default=0.0, ge=0)
    """η in η·(r_w + r_l)²: keeps raw scores near 0 (normalization happens anyway)"""
    group_by_length: bool = True
    """batch pairs of similar length together (a fresh random grouping every epoch): less padding; false = plain
    random batches"""
    eval_fraction: float = Field(default=0.1, ge=0, lt=1)
    """pairs held out for accuracy and margin statistics"""
    normalize_std: bool = True
    """also scale scores to std 1 on the calibration set (else only shift to mean 0)"""
    calibration_max: int = Field(default=2048, ge=2)
    """at most this many calibration responses are scored (a seeded subset)"""
    score_batch_size: int = Field(default=32, ge=1)
    """rows per forward when scoring calibration and held-out responses"""
    precision: Literal["fp32", "bf16"] = "fp32"
    """compute precision of the training forward: bf16 autocast (weights, optimizer and loss stay fp32) is ~2×
    faster per CPU-second from width 512 up on a bf16-capable CPU, slower at the default width 128"""
    checkpoint_every: int = Field(default=50, ge=1)
    """steps between checkpoints"""


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _calibration_texts(ctx: StageContext, p: Params, pairs: list) -> tuple[list, list, dict]:
    """(prompts, responses, description) of the πSFT samples the normalization is computed on."""
    import random

    from alignpipe.data import parse_prompts
    from alignpipe.train import sub_seed

    if "calibration" in ctx.inputs:
        records, path = _common.read_candidates(ctx, "calibration")
        items = []
        for rec in records:
            with _common.data_errors(ctx, "calibration"):
                (prompt,) = parse_prompts([{"prompt": rec["prompt"]}], str(path))
            items += [(prompt, r) for r in rec["responses"] if isinstance(r, str) and r.strip()]
        sampler = _common.upstream_model_id(ctx, "calibration")
        if sampler is not None and sampler != ctx.inputs["model"].id:
            ctx.log(f"warning: calibration samples come from model {sampler[:12]}, not from input 'model' "
                    f"{ctx.inputs['model'].id[:12]}; the normalization centers that model's responses")
        source = {"source": "calibration", "artifact": ctx.inputs["calibration"].id, "sampler": sampler}
    else:
        seen, items = set(), []
        for pr in pairs:
            for response in (pr.chosen, pr.rejected):
                key = json.dumps([pr.prompt, response])
                if key not in seen:
                    seen.add(key)
                    items.append((pr.prompt, response))
        source = {"source": "preference responses", "artifact": ctx.inputs["data"].id}
    if len(items) < 2:
        raise StageFailed(f"stage {ctx.stage!r}: need at least 2 calibration responses, found {len(items)}")
    if len(items) > p.calibration_max:
        keep = sorted(random.Random(sub_seed(ctx.seed, "calibration")).sample(range(len(items)), p.calibration_max))
        items = [items[i] for i in keep]
    return [a for a, _ in items], [b for _, b in items], {**source, "responses": len(items)}


def _margin_stats(margins: list[float]) -> dict:
    import statistics

    ordered = sorted(margins)

    def quantile(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    counts = [0] * (len(MARGIN_EDGES) + 1)
    for m in margins:
        counts[sum(m >= e for e in MARGIN_EDGES)] += 1
    edges = ["-inf", *map(str, MARGIN_EDGES), "inf"]
    return {"mean": statistics.fmean(margins), "std": statistics.pstdev(margins), "p10": quantile(0.1),
            "p50": quantile(0.5), "p90": quantile(0.9),
            "histogram": {f"[{edges[i]}, {edges[i + 1]})": c for i, c in enumerate(counts)}}


def calibration_bins(raw_margins: list[float], bins: int = 5) -> dict:
    """Reliability of the Bradley-Terry probabilities: each pair's P = sigmoid(|r_w − r_l|) (raw units) that the
    RM's preferred response is the labelled one, binned over [0.5, 1]; per bin the mean P, the fraction the RM got
    right (a tie counts ½) and the count; ECE = Σ count/N·|accuracy − mean P|."""
    import math

    acc = [[0.0, 0.0, 0] for _ in range(bins)]  # Σ P, Σ right, count
    for m in raw_margins:
        prob = 1 / (1 + math.exp(-abs(m)))
        b = acc[min(bins - 1, int((prob - 0.5) * 2 * bins))]
        b[0] += prob
        b[1] += 1.0 if m > 0 else 0.5 if m == 0 else 0.0
        b[2] += 1
    out = [{"p_mean": s / n, "accuracy": r / n, "count": n} if n else {"p_mean": None, "accuracy": None, "count": 0}
           for s, r, n in acc]
    total = sum(b["count"] for b in out) or 1
    ece = sum(b["count"] / total * abs(b["accuracy"] - b["p_mean"]) for b in out if b["count"])
    return {"bins": out, "ece": ece}


def _evaluate(scorer, samples: list, batch_size: int, loss_fn) -> dict:
    """Held-out pairwise accuracy, loss and score statistics (scores in normalized units, loss on raw ones)."""
    import statistics

    import torch

    from alignpipe.data.tokenize import collate_preferences
    from alignpipe.models.build import normalized_scores
    from alignpipe.rl.losses import pairwise_accuracy

    raw_c, raw_r = [], []
    for i in range(0, len(samples), batch_size):
        batch = collate_preferences(samples[i:i + batch_size], scorer.tokenizer.pad_token_id)
        c, r = scorer.score_batch(batch, normalized=False).chunk(2)  # (b,), (b,)
        raw_c.append(c)
        raw_r.append(r)
    raw_c, raw_r = torch.cat(raw_c), torch.cat(raw_r)
    chosen, rejected = (normalized_scores(scorer.model, x).tolist() for x in (raw_c, raw_r))
    acc = pairwise_accuracy(torch.tensor(chosen), torch.tensor(rejected))
    return {"pairs": len(samples), "accuracy": acc.accuracy, "ties": acc.ties, "loss": float(loss_fn(raw_c, raw_r)),
            "mean_chosen": statistics.fmean(chosen), "mean_rejected": statistics.fmean(rejected),
            "margin": _margin_stats([c - r for c, r in zip(chosen, rejected, strict=True)]),
            "calibration": calibration_bins((raw_c - raw_r).tolist())}


# ---------------------------------------------------------------------------------------------------------------


def run(ctx: StageContext) -> None:
    import statistics

    import torch

    from alignpipe.data import SkipCounter, parse_preferences
    from alignpipe.data.tokenize import tokenize_preferences
    from alignpipe.models.build import (
        apply_lora,
        count_parameters,
        fold_reward_normalization,
        reward_model_from_causal,
        save_model,
        set_reward_normalization,
    )
    from alignpipe.models.forward import use_fused_kernels
    from alignpipe.models.lean import supports as lean_supported
    from alignpipe.models.scoring import RewardScorer, preference_length, preference_scores
    from alignpipe.rl.losses import reward_model_loss
    from alignpipe.train import (
        EpochBatches,
        LengthGroupedBatches,
        autocast,
        optimizer_step,
        seed_everything,
        setup_training,
        sub_seed,
        train_eval_split,
    )

    p: Params = ctx.params

    # -- seed (the score head's init draws from the global torch RNG)
    seed_everything(ctx.seed)

    # -- inputs, checked before any compute
    _common.require_inputs(ctx, "model", "data")
    tokenizer = _common.load_tokenizer(ctx, "model")
    pairs, parse_skips, source = _common.read_dataset(ctx, "data", parse_preferences,
                                                      max_skip_fraction=p.max_skip_fraction,
                                                      preferred=(_common.PREFERENCES_FILE,))
    _common.require_chat_template(ctx, tokenizer, "model", "data", [pr.prompt for pr in pairs])
    cal_prompts, cal_responses, cal_info = _calibration_texts(ctx, p, pairs)
    if "calibration" in ctx.inputs:
        _common.require_chat_template(ctx, tokenizer, "model", "calibration", cal_prompts)

    # -- model: πSFT backbone + a fresh scalar head
    pad_added = _common.fix_pad_token(ctx, "model", tokenizer)  # the model follows it as it loads
    model = use_fused_kernels(reward_model_from_causal(_common.model_dir(ctx, "model"), tokenizer))
    max_len = _common.resolve_max_len(ctx, p.max_len, model.config, "model")

    # -- data
    token_skips = SkipCounter(str(source), max_fraction=p.max_skip_fraction)
    with _common.data_errors(ctx, "data"):
        samples = tokenize_preferences(tokenizer, pairs, max_len, source=str(source), skips=token_skips)
    train_idx, eval_idx = train_eval_split(len(samples), p.eval_fraction, ctx.seed)
    train = [samples[i] for i in train_idx]
    held_out = [samples[i] for i in eval_idx]
    ctx.log(f"{len(train)} training pairs, {len(held_out)} held out; max_len {max_len}")

    if p.lora:
        model = apply_lora(model, r=p.lora_r, alpha=p.lora_alpha)
    trainable = [prm for prm in model.parameters() if prm.requires_grad]
    ctx.log(f"training {sum(x.numel() for x in trainable):,} of {count_parameters(model):,} parameters")
    model.train()

    # -- optimizer, schedule, data order, resume
    seed = sub_seed(ctx.seed, "order")
    packed = lean_supported(model)  # one row per pair (models.lean): group by that row's length
    order = (LengthGroupedBatches([preference_length(s, packed) for s in train], p.batch_size, seed)
             if p.group_by_length
             else EpochBatches(len(train), p.batch_size, seed))
    training = setup_training(ctx, model, order, p)  # data parallel over the stage's processes, if several
    total, opt, sched, ckpt, resumed = (training.total, training.optimizer, training.scheduler,
                                        training.checkpointer, training.resumed)
    world, forward = training.world, training.forward
    state = resumed.state if resumed else {"recent_loss": [], "recent_acc": []}

    def loss_fn(chosen, rejected):
        return reward_model_loss(chosen, rejected, margin=p.margin, center_coef=p.center_coef)

    # -- loop: Bradley-Terry on (chosen, rejected) scores at the last non-pad token; each rank takes its share of
    # the global batch, the loss is the global mean over pairs
    for step in range(resumed.step if resumed else 0, total):
        shard = world.shard(order.next().indices)
        with autocast(p.precision, model):
            chosen, rejected, tokens = forward(preference_scores, [train[i] for i in shard.indices],
                                               tokenizer.pad_token_id)
        step_loss = world.global_mean(loss_fn(chosen, rejected), shard.count(len(shard.indices)),
                                      correct=shard.count(int((chosen > rejected).sum())), tokens=shard.count(tokens))
        grad_norm = optimizer_step(step_loss.loss, step=step + 1, optimizer=opt, scheduler=sched,
                                   parameters=training.parameters, max_grad_norm=p.max_grad_norm,
                                   checkpoints=ctx.checkpoints, global_loss=step_loss.mean)
        acc = step_loss.sums["correct"] / step_loss.count
        state["recent_loss"] = [*state["recent_loss"], step_loss.mean][-20:]
        state["recent_acc"] = [*state["recent_acc"], acc][-20:]
        ctx.log_metrics(step + 1, loss=step_loss.mean, accuracy=acc, lr=sched.get_last_lr()[0], grad_norm=grad_norm,
                        pairs=step_loss.count, tokens=int(step_loss.sums["tokens"]))
        ctx.progress(step + 1, total, "steps")
        if (step + 1) % p.checkpoint_every == 0 and step + 1 < total:
            ckpt.save(step + 1, state)
    model = training.trained_model()  # rank 0: all the trained weights in one model (FSDP gathers its shards)
    if model is None:  # the other ranks are done: rank 0 normalizes, evaluates and publishes
        world.close()
        return

    # -- normalization: πSFT samples score mean 0 (std 1)
    model.eval()
    scorer = RewardScorer.from_model(model, tokenizer, batch_size=p.score_batch_size, max_length=max_len)
    raw = scorer.score_raw(cal_prompts, cal_responses)
    mean, std = statistics.fmean(raw), statistics.pstdev(raw)
    if not std > 0:
        raise StageFailed(f"stage {ctx.stage!r}: the trained RM gives every calibration response the same score "
                          f"({mean}); it collapsed. Lower params.lr or check the preference data")
    gain = 1.0 / std if p.normalize_std else 1.0
    set_reward_normalization(model, bias=-mean, gain=gain)
    ctx.log(f"normalization on {len(raw)} calibration responses: raw mean {mean:.4f}, std {std:.4f}")

    # -- eval on held-out pairs (normalized units)
    evaluation = _evaluate(scorer, held_out, p.score_batch_size, loss_fn) if held_out else None
    if evaluation:
        ctx.log_metrics(total, eval_accuracy=evaluation["accuracy"], eval_loss=evaluation["loss"])
        ctx.log(f"held-out accuracy {evaluation['accuracy']:.3f} on {len(held_out)} pairs "
                f"(ties {evaluation['ties']}), margin mean {evaluation['margin']['mean']:.3f}")

    # -- save, the normalization folded into the weights: a plain HF consumer reads S, not the raw score
    folded = fold_reward_normalization(model)
    with torch.no_grad():
        save_model(model, tokenizer, ctx.output_dir("model"))
    data_summary = ctx.inputs["data"].summary
    recent = state["recent_loss"]
    ctx.annotate("model", eval=evaluation, eval_accuracy=evaluation["accuracy"] if evaluation else None,
                 label_ceiling_accuracy=data_summary.get("ceiling_accuracy"),
                 train_loss=sum(recent) / len(recent) if recent else None,
                 train_accuracy=statistics.fmean(state["recent_acc"]) if state["recent_acc"] else None,
                 normalization={"bias": -mean, "gain": gain, "raw_mean": mean, "raw_std": std, **cal_info,
                                "folded": folded},
                 steps=total, pairs={"train": len(train), "eval": len(held_out)},
                 skipped=_common.skip_summary(parse_skips, token_skips), pad_token_added=pad_added,
                 margin=p.margin, center_coef=p.center_coef, lora=p.lora, precision=p.precision, max_len=max_len,
                 base_model=ctx.inputs["model"].id)
    world.close()


STAGE = StageDef(
    name="reward", version="3", params=Params, run=run, distributed=True,
    inputs={"model": InputDef("model", doc="πSFT: a HF causal LM directory whose backbone initializes the RM"),
            "data": InputDef("dataset", doc="preference pairs (label's output or a prompt/chosen/rejected file)"),
            "calibration": InputDef("dataset", required=False,
                                    doc="πSFT samples (a generate output) to normalize scores on")},
    outputs={"model": "model"}, doc=__doc__ or "",
)
