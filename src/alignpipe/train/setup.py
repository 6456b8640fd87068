"""The set-up every single-model trainer (pretrain, sft, reward) shares: steps, optimizer, schedule, resume."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from alignpipe.train.checkpoint import Checkpointer, Resumed, run_key
from alignpipe.train.loop import make_adamw
from alignpipe.train.schedule import linear_warmup_decay


@dataclass
class Training:
    total: int  # optimizer steps of the whole run
    optimizer: Any
    scheduler: Any
    checkpointer: Checkpointer
    resumed: Resumed | None  # the newest complete checkpoint, restored into everything above
    world: Any  # alignpipe.distributed.world.World: this process's rank (a world of one when alone)
    forward: Any  # DataParallel: forward(fn, *args) runs fn(model, *args), through DDP/FSDP when data parallel


def setup_training(ctx: Any, model: nn.Module, order: Any, p: Any) -> Training:
    """AdamW (p.lr, p.weight_decay), linear warmup (p.warmup_steps) and decay over p.steps or p.epochs of
    `order`, a Checkpointer over model, optimizer, schedule and data order — restored from the newest checkpoint —
    and, in a multi-process stage, the model made data-parallel over its ranks (alignpipe.distributed.world)."""
    from alignpipe.distributed.world import World

    world = World.from_env()
    total = p.steps or p.epochs * order.batches_per_epoch
    opt = make_adamw(model, p.lr, p.weight_decay)
    sched = linear_warmup_decay(opt, total, min(p.warmup_steps, total))
    ckpt = Checkpointer(ctx.checkpoints, key=run_key(ctx), models={"model": model}, optimizers={"model": opt},
                        schedulers={"model": sched}, batches={"train": order}, log=ctx.log, world=world)
    resumed = ckpt.restore()
    return Training(total, opt, sched, ckpt, resumed, world, world.data_parallel(model))
