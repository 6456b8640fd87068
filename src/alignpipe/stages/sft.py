"""sft — supervised fine-tuning on demonstrations: πSFT, the policy's starting point and the KL anchor.

Consumes `model`: any HF causal LM directory (GPT-2 or Llama style, with or without a chat template);
`data`: demonstrations as {"prompt": str | conversation, "completion": str} or {"messages": conversation
ending in the assistant reply}, a .jsonl/.json/.parquet file or a dataset directory holding one; or, with
`use: chosen`, preference pairs (prompt/chosen/rejected in any format `label` imports), trained on the chosen
response (the common "SFT on chosen, RM on pairs" recipe, one file for both stages).
Produces `model`: πSFT, a plain HF directory (LoRA adapters are merged), tokenizer included.
Summary: eval_loss (held out, before and after), train_loss, train tokens, examples, skipped records by reason,
whether a pad token was added.

Run alone:
    alignpipe stage run sft -i model=base/ -i data=data/demos -p epochs=3 -o sft/
    alignpipe stage run sft -i model=base/ -i data=demos.jsonl -p lora=true -p lr=3e-3 -o sft-lora/
    alignpipe stage run sft -i model=base/ -i data=prefs.jsonl -p use=chosen -o sft-chosen/

Method: a plain prompt is tokenized with the model's special tokens, a conversation with its chat template
(alignpipe.data.tokenize); the completion gets exactly one EOS so the model learns to stop. Loss: next-token
cross-entropy on completion tokens (and the EOS) only, or on prompt tokens too with `include_prompt`; a
token-level mean over each batch; batches group demonstrations of similar length (less padding). AdamW,
linear warmup/decay, gradient clipping, dropout off; optional bf16 autocast (`precision`). Over-long or invalid
records are skipped and counted (never truncated: a cut completion loses its EOS); more than
`max_skip_fraction` fails the stage. Checks before compute: pad ≠ eos (a pad token is added and logged
otherwise), an EOS token exists, chat data has a chat template, max_len fits the model.
Departures: InstructGPT fine-tuned 16 epochs with cosine decay and residual dropout 0.2 and selected by RM
score; we use a linear schedule, no dropout (PPO.md item 8) and report the held-out loss only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alignpipe.pipeline.context import StageContext
from alignpipe.pipeline.errors import StageFailed
from alignpipe.pipeline.stagedef import InputDef, StageDef
from alignpipe.stages import _common
from alignpipe.stages._params import LoopParams, LoraParams


class Params(LoopParams, LoraParams):
    use: Literal["chosen"] | None = None
    """null: `data` holds demonstrations; chosen: `data` holds preference pairs, train on the chosen responses"""
    epochs: int = Field(default=3, ge=1)
    """passes over the training demonstrations (ignored when `steps` is set)"""
    batch_size: int = Field(default=16, ge=1)
    """demonstrations per step"""
    lr: float = Field(default=5e-4, gt=0)
    """peak AdamW learning rate"""
    warmup_steps: int = Field(default=0, ge=0)
    """linear warmup steps (capped at the total)"""
    max_len: int | None = Field(default=None, ge=2)
    """longest prompt + completion in tokens (longer ones are skipped); default: the model's max positions"""
    include_prompt: bool = False
    """also train on prompt tokens (default: completion tokens and the EOS only)"""
    group_by_length: bool = True
    """batch demonstrations of similar length together (a fresh random grouping every epoch): about 4× less
    padding on the default data; false = plain random batches"""
    eval_fraction: float = Field(default=0.05, ge=0, lt=1)
    """demonstrations held out for the eval loss"""
    precision: Literal["fp32", "bf16"] = "fp32"
    """compute precision of the training forward: bf16 autocast (weights, optimizer and loss stay fp32) is ~2×
    faster per CPU-second from width 512 up on a bf16-capable CPU, slower at the default width 128"""
    checkpoint_every: int = Field(default=50, ge=1)
    """steps between checkpoints"""


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _batches(samples: list, batch_size: int, pad_id: int) -> list:
    from alignpipe.data.tokenize import collate_lm

    return [collate_lm(samples[i:i + batch_size], pad_id) for i in range(0, len(samples), batch_size)]


# ---------------------------------------------------------------------------------------------------------------


def run(ctx: StageContext) -> None:
    import torch

    from alignpipe.data import SkipCounter, parse_chosen, parse_sft
    from alignpipe.data.tokenize import collate_lm, tokenize_sft
    from alignpipe.models.build import apply_lora, count_parameters, load_causal_lm, save_model
    from alignpipe.models.forward import use_fused_kernels
    from alignpipe.train import (
        EpochBatches,
        LengthGroupedBatches,
        autocast,
        evaluate_lm,
        lm_loss,
        optimizer_step,
        seed_everything,
        setup_training,
        sub_seed,
        train_eval_split,
    )

    p: Params = ctx.params

    # -- seed
    seed_everything(ctx.seed)

    # -- inputs: the model's tokenizer and the demonstrations, checked before any compute
    _common.require_inputs(ctx, "model", "data")
    tokenizer = _common.load_tokenizer(ctx, "model")
    examples, parse_skips, source = _common.read_dataset(ctx, "data", parse_chosen if p.use == "chosen" else parse_sft,
                                                         max_skip_fraction=p.max_skip_fraction,
                                                         preferred=(_common.PREFERENCES_FILE,))
    _common.require_chat_template(ctx, tokenizer, "model", "data", [e.prompt for e in examples])

    # -- model (pad ≠ eos fixed before tokenizing, so every id is final)
    model = use_fused_kernels(load_causal_lm(_common.model_dir(ctx, "model")))
    pad_added = _common.fix_pad_token(ctx, "model", tokenizer, model)
    max_len = _common.resolve_max_len(ctx, p.max_len, model.config, "model")

    # -- data
    token_skips = SkipCounter(str(source), max_fraction=p.max_skip_fraction)
    with _common.data_errors(ctx, "data"):
        samples = tokenize_sft(tokenizer, examples, max_len, completion_only=not p.include_prompt,
                               source=str(source), skips=token_skips)
    train_idx, eval_idx = train_eval_split(len(samples), p.eval_fraction, ctx.seed)
    train, held_out = [samples[i] for i in train_idx], [samples[i] for i in eval_idx]
    pad = tokenizer.pad_token_id
    ctx.log(f"{len(train)} training demonstrations, {len(held_out)} held out; max_len {max_len}")

    if p.lora:
        model = apply_lora(model, r=p.lora_r, alpha=p.lora_alpha)
    trainable = [prm for prm in model.parameters() if prm.requires_grad]
    ctx.log(f"training {sum(x.numel() for x in trainable):,} of {count_parameters(model):,} parameters"
            + (f" (LoRA r={p.lora_r})" if p.lora else ""))
    model.train()

    # -- optimizer, schedule, data order, resume
    seed = sub_seed(ctx.seed, "order")
    order = (LengthGroupedBatches([len(s.input_ids) for s in train], p.batch_size, seed) if p.group_by_length
             else EpochBatches(len(train), p.batch_size, seed))
    training = setup_training(ctx, model, order, p)  # data parallel over the stage's processes, if several
    total, opt, sched, ckpt, resumed = (training.total, training.optimizer, training.scheduler,
                                        training.checkpointer, training.resumed)
    world, forward = training.world, training.forward
    eval_batches = _batches(held_out, p.batch_size, pad)
    if resumed:
        state = resumed.state
    else:
        state = {"tokens": 0, "recent": [],
                 "eval_loss_init": evaluate_lm(training.local, eval_batches) if held_out and world.is_main else None}

    # -- loop: each rank takes its share of the global batch; the loss is the global token mean
    for step in range(resumed.step if resumed else 0, total):
        shard = world.shard(order.next().indices)
        batch = collate_lm([train[i] for i in shard.indices], pad)
        with autocast(p.precision, model):
            loss, n_tokens = forward(lm_loss, batch["input_ids"], batch["attention_mask"], batch["labels"])
        tokens = int(batch["attention_mask"].sum())
        step_loss = world.global_mean(loss, shard.count(n_tokens), tokens=shard.count(tokens))
        grad_norm = optimizer_step(step_loss.loss, step=step + 1, optimizer=opt, scheduler=sched,
                                   parameters=training.parameters, max_grad_norm=p.max_grad_norm,
                                   checkpoints=ctx.checkpoints, global_loss=step_loss.mean)
        state["tokens"] += step_loss.count
        state["recent"] = [*state["recent"], step_loss.mean][-20:]
        ctx.log_metrics(step + 1, loss=step_loss.mean, lr=sched.get_last_lr()[0], grad_norm=grad_norm,
                        tokens=int(step_loss.sums["tokens"]), label_tokens=step_loss.count)
        ctx.progress(step + 1, total, "steps")
        if (step + 1) % p.checkpoint_every == 0 and step + 1 < total:
            ckpt.save(step + 1, state)
    model = training.trained_model()  # rank 0: all the trained weights in one model (FSDP gathers its shards)
    if model is None:  # the other ranks are done: rank 0 evaluates and publishes
        world.close()
        return

    # -- eval
    eval_loss = evaluate_lm(model, eval_batches) if held_out else None
    train_loss = sum(state["recent"]) / len(state["recent"]) if state["recent"] else None
    if eval_loss is not None:
        ctx.log_metrics(total, eval_loss=eval_loss)
        ctx.log(f"eval loss {state['eval_loss_init']:.3f} -> {eval_loss:.3f}")
    if eval_loss is not None and not eval_loss < float("inf"):
        raise StageFailed(f"stage {ctx.stage!r}: held-out loss is {eval_loss} after training; lower params.lr")

    # -- save (a LoRA model is merged into a plain HF directory)
    model.eval()
    with torch.no_grad():
        save_model(model, tokenizer, ctx.output_dir("model"))
    ctx.annotate("model", eval_loss=eval_loss, eval_loss_init=state["eval_loss_init"], train_loss=train_loss,
                 steps=total, train_tokens=state["tokens"], examples={"train": len(train), "eval": len(held_out)},
                 skipped=_common.skip_summary(parse_skips, token_skips), pad_token_added=pad_added,
                 completion_only=not p.include_prompt, lora=p.lora, precision=p.precision, max_len=max_len,
                 base_model=ctx.inputs["model"].id)
    world.close()


STAGE = StageDef(
    name="sft", version="2", params=Params, run=run, distributed=True,
    inputs={"model": InputDef("model", doc="a HF causal LM directory (pretrain output or any checkpoint)"),
            "data": InputDef("dataset", doc="demonstrations: prompt/completion or chat messages")},
    outputs={"model": "model"}, doc=__doc__ or "",
)
