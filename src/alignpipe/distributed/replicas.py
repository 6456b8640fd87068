"""PPO's data-parallel actor replicas: a stage of N processes whose one model group (actor, critic, reference and
reward model, colocated) is on all N runs N replicas of the whole trainer, each on its share of every rollout batch.

What stays the batch's, whatever N (the spec defines it, not the world size):
- the prompts: every rank draws the same global batch and takes a fixed contiguous share (`rows`, as World.shard);
- the samples: each share samples its rows with the uniforms one process would draw for them from the same seed
  (models.forward.BatchShare: the ranks exchange their counts of rows computed and ended at every decoding step),
  so a row's tokens do not depend on N;
- every batch statistic: each rank recomputes its rows with the training forward and scores them with its own
  frozen models, then the rollouts are gathered (`gather_rollout`): rewards, GAE, advantage whitening, the KL
  the controller sees and the logged means are computed over the global batch, the same on every rank;
- the updates: the minibatch order is the global one (the same generator on every rank); each rank runs the
  forward and backward of the minibatch rows it holds, with losses divided by the minibatch's global token count,
  and the gradients are summed over the ranks (`sync_gradients`) before clipping and the optimizer step, so every
  replica steps with the gradient of the global minibatch loss, up to the order of floating-point additions.

A 2-process PPO run therefore follows the 1-process run's curves; rank 0 publishes. Imports torch: use it inside
a stage's run().
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from alignpipe.distributed.world import World
from alignpipe.models.forward import BatchShare


@dataclass(frozen=True)
class Replicas:
    world: World
    start: int  # this rank's first row of every global rollout batch
    count: int  # its rows

    @classmethod
    def of(cls, world: World, batch_size: int) -> Replicas:
        """This rank's contiguous share of a batch of `batch_size` rows (the first batch_size % size ranks take one
        more); every rank needs a row (the caller refuses a smaller batch)."""
        base, extra = divmod(batch_size, world.size)
        return cls(world, world.rank * base + min(world.rank, extra), base + (world.rank < extra))

    def rows(self, indices: list[int]) -> list[int]:
        """This rank's share of a global batch's prompt indices."""
        return indices[self.start:self.start + self.count]

    def share(self) -> BatchShare:
        """How this rank samples its rows as part of the global batch (models.forward.sample_responses)."""
        def gather(active: int, ended: int) -> list[tuple[int, int]]:
            return [(int(a), int(e)) for a, e in self.world.gather(active, ended)]

        return BatchShare(self.world.rank, gather)

    def gather_rollout(self, rollout: Any) -> Any:
        """The global rl.ppo.Rollout from every rank's rows, in rank order (the same on every rank)."""
        import torch.distributed as dist

        from alignpipe.rl.ppo import Rollout

        names = ("logprobs_old", "values_old", "ref_logprobs", "response_mask", "scores", "eos_emitted")
        box: list[Any] = [None] * self.world.size
        dist.all_gather_object(box, {n: getattr(rollout, n).cpu() for n in names}, group=self.world.group)
        return Rollout(**{n: torch.cat([part[n] for part in box]) for n in names})

    def mean(self, total: float, count: int) -> float:
        """A global mean from this rank's sum and count (one all-reduce)."""
        total, count = self.world.sum(total, count)
        return total / count

    def local(self, forward_fn: Callable[[torch.Tensor], Any]) -> Callable[[torch.Tensor], Any]:
        """forward_fn over this rank's rows, called with global row indices (rl.ppo hands it only owned rows)."""
        return lambda idx: forward_fn(idx - self.start)

    # -- rl.ppo.Replicated: what ppo_update asks of data-parallel replicas -----------------------------------------
    def owned(self, indices: torch.Tensor) -> torch.Tensor:
        """The global row indices of a minibatch that this rank computes, in the minibatch's order."""
        return indices[(indices >= self.start) & (indices < self.start + self.count)]

    def sync_gradients(self, params: list[torch.Tensor]) -> None:
        """Sum every parameter's gradient over the ranks (each rank's loss is already divided by the global token
        count). A parameter no rank computed a gradient for keeps None, as in one process (Adam skips it); a rank
        that held no row of the minibatch contributes zeros."""
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads] + [
            torch.tensor([float(p.grad is not None) for p in params], dtype=grads[0].dtype, device=grads[0].device)])
        dist.all_reduce(flat, group=self.world.group)
        sizes = [g.numel() for g in grads]
        *parts, computed = flat.split([*sizes, len(params)])
        for p, part, any_rank in zip(params, parts, computed.tolist(), strict=True):
            p.grad = part.view_as(p).clone() if any_rank else None

    def reduce_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """One minibatch's statistics over the ranks: sums of the per-rank parts (losses and fractions are already
        weighted by the global token count), extremes of ratio_min and ratio_max."""
        keys = list(stats)
        every = self.world.gather(*(stats[k] for k in keys))
        out = {k: sum(rank[i] for rank in every) for i, k in enumerate(keys)}
        for key, extreme in (("ratio_min", min), ("ratio_max", max)):
            if key in stats:  # (a critic's replicas have only the value loss's statistics)
                out[key] = extreme(rank[keys.index(key)] for rank in every)
        return out

    def replicate(self, modules: list[torch.nn.Module]) -> None:
        """Every rank starts from rank 0's weights (as DDP does): a random initialization (LoRA) cannot differ."""
        import torch.distributed as dist

        with torch.no_grad():
            for module in modules:
                for p in module.parameters():
                    dist.broadcast(p.data, group=self.world.group, group_src=0)
