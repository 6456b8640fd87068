"""PPO's model groups at run time: which process holds which of actor, critic, reference and reward model, and how
the trainer's rollouts reach the frozen models that sit in other processes.

The stage's ranks (alignpipe.distributed.launch: local processes, or one Ray actor each) take the plan's groups in
order: the group holding the actor (and the critic) is rank 0, the trainer — it samples the rollouts, runs the
updates, checkpoints and publishes; every other group is a rank of its own that loads only its frozen models and
serves the trainer: for each rollout batch the trainer sends the tokens (and texts, for a reward function) to
every serving rank, computes its own no-grad forward while they score, then collects their reference log-probs
and reward scores. Tensors travel as they are (torch.distributed point-to-point, gloo or NCCL): the frozen models
compute exactly what they compute in the trainer's process, so a split placement makes the same PPO updates as
the colocated one. An `offload` group runs in the trainer's process, on the CPU.

What runs today: one process per group (colocated in one process; split: 2; explicit groups: one process each,
the actor and critic together), and data-parallel replicas of the whole trainer when its one group holds every
model on every process (colocated over N processes, or offload: the frozen models in each replica's process; see
alignpipe.distributed.replicas). Replicas of a group beside other groups (split over 4 processes) and
FSDP-sharded groups are planned (alignpipe.distributed.placement) but refused at run time with a message; see
docs/scaling.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from alignpipe.distributed.placement import PPOPlan
from alignpipe.pipeline.errors import StageFailed

Frozen = dict[str, Callable[[Any, list[str], list[Any]], Any]]  # model -> f(batch, texts, prompts) -> tensor


@dataclass(frozen=True)
class Roles:
    """Which rank holds each model; `offloaded` ones run in the trainer's process on the CPU."""

    ranks: dict[str, int]
    offloaded: tuple[str, ...] = ()
    replicas: int = 1  # > 1: every rank is a data-parallel replica of the trainer, holding every model (rank 0's)

    def held_by(self, rank: int) -> tuple[str, ...]:
        return tuple(m for m, r in self.ranks.items() if r == rank)

    @property
    def serving(self) -> dict[int, tuple[str, ...]]:
        """rank -> the frozen models it serves (ranks other than the trainer's)."""
        out: dict[int, tuple[str, ...]] = {}
        for m, r in self.ranks.items():
            if r:
                out[r] = (*out.get(r, ()), m)
        return out


def local_devices(resources: dict[str, Any], world_size: int) -> Any:
    """The devices of a stage's processes on the machine it runs on: a GPU each (resources gpus), or CPU
    processes with `memory` each (default: the machine's memory shared by them)."""
    from alignpipe.distributed.placement import Devices
    from alignpipe.pipeline.spec import Machine

    nodes, machine = int(resources.get("nodes", 1)), Machine.detect()
    if resources.get("gpus"):
        import torch

        memory = torch.cuda.get_device_properties(0).total_memory
        return Devices("gpu", world_size, memory, nodes, machine.memory, torch.cuda.get_device_name(0))
    memory = resources.get("memory") or (machine.memory or 0) // max(1, int(resources.get("procs_per_node", 1)))
    return Devices("cpu", world_size, memory, nodes, machine.memory)


def roles(plan: PPOPlan, world_size: int, stage: str) -> Roles:
    """Ranks for the plan's groups, refusing what the run time cannot run yet (say so, and what would run)."""
    on_devices = [g for g in plan.groups if g.devices]
    trainer = next((g for g in on_devices if "actor" in g.models), None)
    if trainer is None or ("critic" in plan.sizes and "critic" not in trainer.models):
        raise StageFailed(f"stage {stage!r}: placement {plan.describe()} puts the critic apart from the actor; the "
                          "critic trains with the actor in one process today — group them (e.g. placement: split)")
    offloaded = tuple(m for g in plan.groups if not g.devices for m in g.models)
    if on_devices == [trainer] and trainer.devices == world_size > 1 and trainer.shard == 1:
        return Roles({m: 0 for g in plan.groups for m in g.models}, offloaded, replicas=world_size)
    too_wide = [g for g in on_devices if g.devices > 1 or g.shard > 1]
    if too_wide or len(on_devices) != world_size:
        raise StageFailed(f"stage {stage!r}: placement {plan.describe()} needs sharded groups or data-parallel "
                          f"replicas of a group beside other groups, which PPO does not run yet: give each group "
                          f"one process (procs_per_node × nodes = number of groups, here {len(on_devices)}), e.g. "
                          "placement: split with 2 processes, or replicate all four models on every process "
                          "(placement: colocated or offload, any number of processes, sharding not fsdp)")
    order = [trainer, *(g for g in on_devices if g is not trainer)]
    ranks = {m: r for r, g in enumerate(order) for m in g.models}
    return Roles({**ranks, **dict.fromkeys(offloaded, 0)}, offloaded)


@dataclass
class Scoring:
    """The trainer's view of the frozen models: `submit` a rollout batch, then `results` {model: tensor}. Local
    models compute at submit; serving ranks compute while the trainer runs its own forward."""

    local: Frozen
    serving: dict[int, tuple[str, ...]] = field(default_factory=dict)
    world: Any = None
    _pending: dict[str, Any] = field(default_factory=dict)

    def submit(self, batch: Any, texts: list[str], prompts: list[Any]) -> None:
        for rank in self.serving:
            _send(self.world, (batch, texts, prompts), rank)
        self._pending = _compute(self.local, batch, texts, prompts)

    def results(self) -> dict[str, Any]:
        out = dict(self._pending)
        for rank in self.serving:
            out.update(_recv(self.world, rank))
        self._pending = {}
        return out

    def close(self) -> None:
        """Tell the serving ranks that the rollouts are over."""
        for rank in self.serving:
            _send(self.world, None, rank)


def serve(world: Any, frozen: Frozen, trainer: int = 0) -> int:
    """A serving rank: score every batch the trainer sends until it says it is done; the batches served."""
    served = 0
    while True:
        request = _recv(world, trainer)
        if request is None:
            return served
        _send(world, _compute(frozen, *request), trainer)
        served += 1


def _compute(frozen: Frozen, batch: Any, texts: list[str], prompts: list[Any]) -> dict[str, Any]:
    import torch

    with torch.no_grad():
        return {name: fn(batch, texts, prompts) for name, fn in frozen.items()}


def _send(world: Any, obj: Any, rank: int) -> None:
    import torch.distributed as dist

    dist.send_object_list([obj], dst=rank, device=world.device)


def _recv(world: Any, rank: int) -> Any:
    import torch.distributed as dist

    box = [None]
    dist.recv_object_list(box, src=rank, device=world.device)
    return box[0]
