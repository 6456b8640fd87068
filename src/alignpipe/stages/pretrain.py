"""pretrain — a byte-level BPE tokenizer and a tiny causal LM trained from scratch on raw text.

Consumes `corpus`: {"text": str} records, as a .jsonl/.json/.parquet file or a dataset directory holding one
(e.g. the task.reviews stage's `corpus` output).
Produces `model`: a HF directory (model.safetensors, config, generation config, tokenizer) that
`AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained` load. The tokenizer has a dedicated
pad token (≠ eos), prepends <|bos|>, and with `chat_template: true` carries a chat template (role tokens).
Summary: parameters, vocabulary, documents, tokens, train and held-out eval loss.

Run alone:
    alignpipe stage run pretrain -i corpus=data/corpus -p steps=300 -p arch=llama -o base/

Method: documents become [BOS] text [EOS], split into `max_len` windows when longer (one window per row, right
padding, no packing); next-token cross-entropy averaged over tokens; AdamW, linear warmup then linear decay to
0; gradient clipping; the model's context length (max positions) is `max_len`. Checkpoints every
`checkpoint_every` steps; a killed run resumes bit-identically (the tokenizer is retrained deterministically
and its hash checked against the checkpoint's).
Departures: the RLHF papers start from a large pretrained LM; this stage exists so the embedded default runs
offline on a CPU. The default (4 layers, width 128, 1024-token vocabulary) has about 1M parameters.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import Field

from alignpipe.pipeline.context import StageContext
from alignpipe.pipeline.errors import StageFailed
from alignpipe.pipeline.stagedef import InputDef, StageDef
from alignpipe.stages import _common
from alignpipe.stages._params import LoopParams


class Params(LoopParams):
    vocab_size: int = Field(default=1024, ge=263)
    """BPE vocabulary size, including the 256 byte symbols and 7 special tokens"""
    min_frequency: int = Field(default=2, ge=1)
    """minimum pair frequency for a BPE merge"""
    chat_template: bool = True
    """install the default chat template (role tokens + eos per turn) in the tokenizer"""
    arch: Literal["gpt2", "llama"] = "gpt2"
    """model family (GPT-2: learned positions, GELU MLP; Llama: RoPE, RMSNorm, SwiGLU)"""
    n_layer: int = Field(default=4, ge=1)
    """transformer blocks"""
    n_embd: int = Field(default=128, ge=8)
    """hidden size (divisible by n_head)"""
    n_head: int = Field(default=4, ge=1)
    """attention heads"""
    max_len: int = Field(default=128, ge=8)
    """training window and the model's context length (max positions)"""
    epochs: int = Field(default=1, ge=1)
    """passes over the corpus (ignored when `steps` is set)"""
    batch_size: int = Field(default=32, ge=1)
    """documents (windows) per step"""
    lr: float = Field(default=2e-3, gt=0)
    """peak AdamW learning rate"""
    warmup_steps: int = Field(default=20, ge=0)
    """linear warmup steps (capped at the total)"""
    eval_fraction: float = Field(default=0.02, ge=0, lt=1)
    """documents held out for the eval loss"""
    checkpoint_every: int = Field(default=100, ge=1)
    """steps between checkpoints"""


def check(p: Params, inputs: set[str]) -> list[str]:
    problems = []
    if p.n_embd % p.n_head:
        problems.append(f"params.n_embd: {p.n_embd} is not divisible by n_head {p.n_head}")
    return problems


# ---------------------------------------------------------------------------------------------------------------
# helpers


def _tokenizer_hash(tokenizer) -> str:
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------


def run(ctx: StageContext) -> None:
    import torch

    from alignpipe.data import parse_texts
    from alignpipe.data.tokenize import collate_lm, tokenize_texts
    from alignpipe.models.build import LMSpec, build_causal_lm, count_parameters, save_model
    from alignpipe.models.forward import use_fused_kernels
    from alignpipe.models.tokenizer import train_tokenizer
    from alignpipe.train import (
        EpochBatches,
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

    # -- inputs
    texts, skips, source = _common.read_dataset(ctx, "corpus", parse_texts, max_skip_fraction=p.max_skip_fraction)

    # -- data: a held-out split of documents, the tokenizer trained on the training documents
    train_idx, eval_idx = train_eval_split(len(texts), p.eval_fraction, ctx.seed)
    tokenizer = train_tokenizer([texts[i] for i in train_idx], vocab_size=p.vocab_size,
                                min_frequency=p.min_frequency, chat_template=p.chat_template)
    train = tokenize_texts(tokenizer, [texts[i] for i in train_idx], p.max_len, windows=True)
    held_out = tokenize_texts(tokenizer, [texts[i] for i in eval_idx], p.max_len, windows=True)
    if not train:
        raise StageFailed(f"stage {ctx.stage!r} {_common.describe(ctx, 'corpus')}: no training tokens in {source}")
    pad = tokenizer.pad_token_id
    ctx.log(f"tokenizer: {len(tokenizer)} tokens; {len(train)} training windows, {len(held_out)} held out")

    # -- model
    spec = LMSpec(arch=p.arch, n_layer=p.n_layer, hidden=p.n_embd, n_head=p.n_head, max_positions=p.max_len)
    model = use_fused_kernels(build_causal_lm(spec, tokenizer, seed=sub_seed(ctx.seed, "init")))
    model.train()
    ctx.log(f"{p.arch} model: {count_parameters(model):,} parameters")

    # -- optimizer, schedule, data order, resume
    order = EpochBatches(len(train), p.batch_size, sub_seed(ctx.seed, "order"))
    training = setup_training(ctx, model, order, p)  # data parallel over the stage's processes, if several
    total, opt, sched, ckpt, resumed = (training.total, training.optimizer, training.scheduler,
                                        training.checkpointer, training.resumed)
    world, forward = training.world, training.forward
    state = resumed.state if resumed else {"tokens": 0, "recent": [], "tokenizer": _tokenizer_hash(tokenizer)}
    if state["tokenizer"] != _tokenizer_hash(tokenizer):
        raise StageFailed(f"stage {ctx.stage!r}: the retrained tokenizer differs from the checkpoint's; delete "
                          f"{ctx.checkpoints.root} and rerun")

    # -- loop: each rank takes its share of the global batch; the loss is the global token mean
    for step in range(resumed.step if resumed else 0, total):
        shard = world.shard(order.next().indices)
        batch = collate_lm([train[i] for i in shard.indices], pad)
        loss, n_tokens = forward(lm_loss, batch["input_ids"], batch["attention_mask"], batch["labels"])
        step_loss = world.global_mean(loss, shard.count(n_tokens))
        grad_norm = optimizer_step(step_loss.loss, step=step + 1, optimizer=opt, scheduler=sched,
                                   parameters=model.parameters(), max_grad_norm=p.max_grad_norm,
                                   checkpoints=ctx.checkpoints, global_loss=step_loss.mean)
        state["tokens"] += step_loss.count
        state["recent"] = [*state["recent"], step_loss.mean][-20:]
        ctx.log_metrics(step + 1, loss=step_loss.mean, lr=sched.get_last_lr()[0], grad_norm=grad_norm)
        ctx.progress(step + 1, total, "steps")
        if (step + 1) % p.checkpoint_every == 0 and step + 1 < total:
            ckpt.save(step + 1, state)
    model = training.trained_model()  # rank 0: all the trained weights in one model (FSDP gathers its shards)
    if model is None:  # the other ranks are done: rank 0 evaluates and publishes
        world.close()
        return

    # -- eval
    eval_batches = [collate_lm(held_out[i:i + p.batch_size], pad) for i in range(0, len(held_out), p.batch_size)]
    eval_loss = evaluate_lm(model, eval_batches) if eval_batches else None
    train_loss = sum(state["recent"]) / len(state["recent"])
    if eval_loss is not None:
        ctx.log_metrics(total, eval_loss=eval_loss)
    ctx.log(f"done: train loss {train_loss:.3f}, eval loss {eval_loss if eval_loss is None else round(eval_loss, 3)}")

    # -- save
    model.eval()
    with torch.no_grad():
        save_model(model, tokenizer, ctx.output_dir("model"))
    ctx.annotate("model", arch=p.arch, parameters=count_parameters(model), vocab_size=len(tokenizer),
                 max_positions=p.max_len, steps=total, train_tokens=state["tokens"], train_loss=train_loss,
                 eval_loss=eval_loss, documents={"train": len(train_idx), "eval": len(eval_idx)},
                 skipped=_common.skip_summary(skips), pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
                 chat_template=p.chat_template)
    world.close()


STAGE = StageDef(
    name="pretrain", version="2", params=Params, run=run, distributed=True,
    inputs={"corpus": InputDef("dataset", doc='{"text"} records: a .jsonl file or a dataset dir')},
    outputs={"model": "model"}, check=check, doc=__doc__ or "",
)
