"""The set-up every single-model trainer (pretrain, sft, reward) shares: steps, optimizer, schedule, resume."""

from __future__ import annotations

from collections.abc import Iterator
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
    model: nn.Module  # the model trained (its parameters FSDP shards when sharded)
    full: nn.Module | None = None  # FSDP: rank 0's unsharded copy, filled with the trained weights by trained_model

    @property
    def parameters(self) -> Iterator[Any]:
        """The trainable parameters as the optimizer steps them, read when iterated: FSDP registers the unsharded
        parameters during the forward and backward, and the shards, which receive the gradients, after them."""
        return (prm for prm in self.model.parameters() if prm.requires_grad)

    @property
    def local(self) -> nn.Module:
        """A model this rank can run on its own: the model, or under FSDP rank 0's unsharded copy (at the weights
        training started from until trained_model())."""
        return self.full if self.full is not None else self.model

    def trained_model(self) -> nn.Module | None:
        """The trained model with all its weights, on rank 0's CPU (None on the others): the model itself, or under
        FSDP rank 0's unsharded copy filled with the gathered shards (every rank must call it: a collective)."""
        if self.full is None and not self.checkpointer.sharded:  # evaluated and saved on the CPU, as before
            return self.model.cpu() if self.world.is_main else None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.world.is_main:
            return None
        self.full.load_state_dict(state)
        return self.full


def setup_training(ctx: Any, model: nn.Module, order: Any, p: Any) -> Training:
    """AdamW (p.lr, p.weight_decay), linear warmup (p.warmup_steps) and decay over p.steps or p.epochs of
    `order`, a Checkpointer over model, optimizer, schedule and data order — restored from the newest checkpoint —
    and, in a multi-process stage, the model made data-parallel over its ranks (alignpipe.distributed.world):
    a replica on every rank (DDP), or sharded over them (FSDP2) when the stage's resources say `sharding: fsdp`."""
    import copy

    from alignpipe.distributed.world import World
    from alignpipe.pipeline.errors import StageFailed

    world = World.from_env()
    sharded = (getattr(ctx, "resources", None) or {}).get("sharding") == "fsdp" and world.size > 1
    if sharded and hasattr(model, "peft_config"):
        raise StageFailed(f"stage {ctx.stage!r}: sharding fsdp does not shard LoRA-wrapped models; set lora: false "
                          "or resources.sharding: ddp")
    full = copy.deepcopy(model) if sharded and world.is_main else None  # rank 0 publishes an unsharded model
    model.to(world.device)  # the rank's GPU when it has one
    forward = world.data_parallel(model, "fsdp" if sharded else "ddp")  # before the optimizer: it steps the shards
    total = p.steps or p.epochs * order.batches_per_epoch
    opt = make_adamw(model, p.lr, p.weight_decay)
    sched = linear_warmup_decay(opt, total, min(p.warmup_steps, total))
    ckpt = Checkpointer(ctx.checkpoints, key=run_key(ctx), models={"model": model}, optimizers={"model": opt},
                        schedulers={"model": sched}, batches={"train": order}, log=ctx.log, world=world,
                        sharded=sharded)
    return Training(total, opt, sched, ckpt, ckpt.restore(), world, forward, model, full)
