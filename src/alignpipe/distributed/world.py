"""A rank's view of torch.distributed: what a data-parallel stage needs, and nothing when it runs alone.

The launcher (alignpipe.distributed.launch: local processes, or Ray actors) starts a multi-process stage's ranks
with the torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT); `World.from_env()` joins
them (gloo on CPU, NCCL on GPU). One process (no WORLD_SIZE > 1) is a world of one: every method below is then
the identity, so a stage's single-process path computes exactly what it did before.

What stays the same whatever the world size (the spec defines it, not the launcher): the global batch (each rank
takes a fixed contiguous share of it, `shard`), the data order (every rank draws the same global order), the
learning-rate schedule, and the loss: `global_mean` turns each rank's local mean into the global one — the sum of
per-sample (or per-token) losses over all ranks divided by their global count — and scales what each rank
back-propagates so that the data-parallel gradient (averaged over ranks by DDP and FSDP) is exactly that mean's
gradient, up to the order of floating-point additions. A 2-process run follows the 1-process loss curve.

Imports torch: use it inside a stage's run().
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

T = TypeVar("T")
TIMEOUT = timedelta(minutes=30)  # a collective waits this long for a slow rank; a dead one is killed sooner (launch)


@dataclass(frozen=True)
class Shard:
    """This rank's share of a global batch. `real` False: the share is empty and `indices` re-runs the batch's first
    example, weighted 0, so the rank still joins the gradient all-reduce."""

    indices: list[int]
    real: bool = True

    def count(self, n: int | float) -> int | float:
        """`n` (samples, tokens) of this share as the global mean counts them: 0 for the stand-in of an empty one."""
        return n if self.real else 0


@dataclass(frozen=True)
class GlobalLoss:
    loss: Tensor  # what this rank back-propagates
    mean: float  # the global mean (what a 1-process run logs)
    count: int  # the global count of samples or tokens the mean is over
    sums: dict[str, float] = field(default_factory=dict)  # other per-rank counters, summed over ranks


@dataclass
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None
    gpu: bool = False  # this rank trains on its GPU (cuda:local_rank); else on the CPU
    group: Any = None  # the process group of a `subgroup` (rank and size are then within it); None: every rank

    @classmethod
    def from_env(cls) -> World:
        """Join the process group the launcher set up (WORLD_SIZE > 1), else a world of one. A rank with a visible
        GPU trains on it (NCCL between ranks); without one, on the CPU (gloo). The runner makes a stage's GPUs
        visible only when its resources ask for them (CUDA_VISIBLE_DEVICES)."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        gpu = torch.cuda.is_available()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if gpu:  # a Ray rank sees only its own GPU (device 0); a local one sees the node's
            local_rank %= torch.cuda.device_count()
            torch.cuda.set_device(local_rank)
        if size <= 1:
            return cls(local_rank=local_rank if gpu else 0, gpu=gpu)
        import torch.distributed as dist

        backend = "nccl" if gpu else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend, timeout=TIMEOUT)
        return cls(dist.get_rank(), dist.get_world_size(), local_rank, backend, gpu)

    def subgroup(self, ranks: list[int]) -> World | None:
        """Some of the world's ranks as a world of their own, whose collectives leave the other ranks alone (PPO's
        actor replicas beside ranks of frozen models); None on a rank outside it. Every rank of the world calls it
        with the same ranks (torch.distributed.new_group is collective)."""
        if self.size == 1 or list(ranks) == list(range(self.size)):
            return self
        if self.rank not in ranks:
            if len(ranks) > 1:
                import torch.distributed as dist

                dist.new_group(list(ranks))
            return None
        if len(ranks) == 1:
            return World(local_rank=self.local_rank, gpu=self.gpu)
        import torch.distributed as dist

        return World(list(ranks).index(self.rank), len(ranks), self.local_rank, self.backend, self.gpu,
                     dist.new_group(list(ranks)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.gpu else torch.device("cpu")

    # -- data ------------------------------------------------------------------------------------------------------
    def shard(self, indices: list[int]) -> Shard:
        """A contiguous share of `indices`: the first len % size ranks take one more (as numpy.array_split)."""
        if self.size == 1:
            return Shard(list(indices))
        base, extra = divmod(len(indices), self.size)
        start = self.rank * base + min(self.rank, extra)
        mine = indices[start:start + base + (self.rank < extra)]
        return Shard(mine) if mine else Shard(list(indices[:1]), real=False)

    # -- reductions ------------------------------------------------------------------------------------------------
    def sum(self, *values: float) -> list[float]:
        """Each value summed over the ranks (one all-reduce of a float64 vector)."""
        if self.size == 1:
            return [float(v) for v in values]
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, group=self.group)
        return t.tolist()

    def gather(self, *values: float) -> list[list[float]]:
        """Every rank's `values`, in rank order (one all-reduce: each rank fills its own slots of a zero vector)."""
        if self.size == 1:
            return [[float(v) for v in values]]
        n = len(values)
        slots = [0.0] * (n * self.size)
        slots[self.rank * n:(self.rank + 1) * n] = values
        out = self.sum(*slots)
        return [out[r * n:(r + 1) * n] for r in range(self.size)]

    def global_mean(self, local_mean: Tensor, count: int, **sums: float) -> GlobalLoss:
        """The global mean of a loss whose local mean on this rank is over `count` samples or tokens (0 for an
        empty shard), and the loss to back-propagate so that the data-parallel gradient is the global mean's.
        `sums`: other per-rank counters (tokens, correct predictions) summed over the ranks in the same
        all-reduce."""
        if self.size == 1:
            return GlobalLoss(local_mean, float(local_mean.detach()), int(count),
                              {k: float(v) for k, v in sums.items()})
        loss_sum, total, *rest = self.sum(float(local_mean.detach()) * count, count, *sums.values())
        total = max(total, 1.0)
        # DDP and FSDP average gradients over the ranks: size · (local sum / global count) averages to the
        # global sum / global count
        scale = count * self.size / total
        return GlobalLoss(local_mean * scale, loss_sum / total, int(total), dict(zip(sums, rest, strict=True)))

    # -- models ----------------------------------------------------------------------------------------------------
    def data_parallel(self, model: nn.Module, sharding: str = "ddp") -> DataParallel:
        """`model` trained data-parallel: a replica per rank (DDP) or sharded over the ranks (FSDP2), or as is in a
        world of one. Call the result with (fn, *args) to run fn(model, *args) as the forward DDP/FSDP see."""
        if self.size == 1:
            return DataParallel(model, None)
        wrapper = _Apply(model)
        if sharding == "fsdp":
            from torch.distributed.fsdp import fully_shard

            fully_shard(wrapper)  # one unit: the stage's own forwards (models.lean) may call any submodule
            return DataParallel(model, wrapper)
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.gpu else None
        return DataParallel(model, DistributedDataParallel(wrapper, device_ids=ids, forward_sync_buffers=False))

    # -- coordination ----------------------------------------------------------------------------------------------
    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier(group=self.group)

    def broadcast(self, obj: T) -> T:
        """Rank 0's `obj`, on every rank."""
        if self.size == 1:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, group=self.group, device=self.device, group_src=0)
        return box[0]

    def close(self) -> None:
        """Leave the process group together: rank 0 hosts its store (MASTER_PORT), and a rank still tearing down
        when rank 0 exits would wait on it until the timeout. The other ranks wait here while rank 0 publishes. A
        subgroup is not closed: the whole world is, by every rank."""
        if self.size > 1 and self.group is None:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()


class _Apply(nn.Module):
    """A module whose forward is fn(model, *args): DDP and FSDP see every forward a stage runs, whichever
    submodules it calls (the lean forwards of alignpipe.models.lean call layers directly)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return fn(self.model, *args, **kwargs)


@dataclass
class DataParallel:
    """The trained model and how its forward runs: directly (one process) or through DDP/FSDP."""

    model: nn.Module
    wrapper: nn.Module | None

    def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        device = next(self.model.parameters()).device  # tensor arguments go where the model is (a no-op on CPU)
        args = tuple(a.to(device) if isinstance(a, Tensor) else a for a in args)
        if self.wrapper is None:
            return fn(self.model, *args, **kwargs)
        return self.wrapper(fn, *args, **kwargs)
