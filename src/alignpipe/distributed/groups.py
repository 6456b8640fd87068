"""PPO's model groups at run time: which process holds which of actor, critic, reference and reward model, and how
the trainer's rollouts reach the frozen models that sit in other processes.

The stage's ranks (alignpipe.distributed.launch: local processes, or one Ray actor each) take the plan's groups in
order, a rank per device: the group holding the actor (and the critic) comes first, its ranks the trainers — they
sample the rollouts and run the updates, rank 0 checkpoints and publishes; every other group's ranks load only
their models and serve the trainers: for each rollout batch a trainer sends the tokens (and texts, for a reward
function) to its serving ranks, computes its own no-grad forward while they score, then collects their reference
log-probs and reward scores. Tensors travel as they are (torch.distributed point-to-point, gloo or NCCL): the
frozen models compute exactly what they compute in the trainer's process, so a split placement makes the same PPO
updates as the colocated one. An `offload` group runs in the trainer's processes, on the CPU.

A trainer group of several ranks is data-parallel replicas of the trainer (alignpipe.distributed.replicas), their
collectives confined to their own process group (World.subgroup) so that the serving ranks are never waited on:
replica i is served by rank i mod n of every other group of n ranks, which answers its replicas in turn.

A critic on devices of its own (placement: separate, or a group holding the critic without the actor) trains in its
rank: it answers each rollout batch with its values V_old (and the scores of any frozen model it holds), then runs
the value half of every PPO update while the trainer runs the policy half (rl.ppo.Partner: the same rollout, the
same minibatch order from the trainer's generator state, gradient norms exchanged before every step so a NaN on
either side stops both). Its weights, optimizer and schedule reach the trainer's checkpoint, and its trained
weights the published value model, through the process group (`RemoteCritic`): no shared disk is assumed.

A critic apart beside actor replicas is replicated as many times: trainer replica i trains with critic rank i (its
V_old for the trainer's share, the value half of its share of every minibatch), the critics' gradients summed in a
process group of their own.

What runs today: every layout whose groups hold whole replicas — one process per group (colocated; split: 2;
separate: 4; explicit groups), replicas of the trainer alone (colocated over N processes, or offload) or beside
groups of frozen models (split over 3 or more) or beside as many critic replicas. Refused at run time with a message
(docs/scaling.md): FSDP-sharded groups, and a critic apart on another number of processes than the actor.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignpipe.distributed.placement import PPOPlan
from alignpipe.pipeline.errors import StageFailed

Frozen = dict[str, Callable[[Any, list[str], list[Any]], Any]]  # model -> f(batch, texts, prompts) -> tensor


@dataclass(frozen=True)
class Roles:
    """Which ranks hold which models: each on-device group of the plan with its ranks, the trainer's group (the
    actor's) first; `offloaded` models run in the trainer's processes, on the CPU. A group of several ranks holds a
    replica of its models on each: the trainer's are data-parallel replicas of the trainer (distributed.replicas),
    and trainer replica i is served by rank i mod n of every other group of n ranks."""

    groups: tuple[tuple[str, ...], ...]
    ranks: tuple[tuple[int, ...], ...]
    offloaded: tuple[str, ...] = ()

    @property
    def trainers(self) -> tuple[int, ...]:
        return self.ranks[0]

    @property
    def critic_ranks(self) -> tuple[int, ...]:
        """The ranks of a critic training apart from the actor, one per trainer replica; () when it trains with the
        actor (or is a value head on it)."""
        return next((r for g, r in zip(self.groups[1:], self.ranks[1:], strict=True) if "critic" in g), ())

    def critic_of(self, trainer: int) -> int | None:
        """The rank of trainer rank `trainer`'s critic, when the critic is apart."""
        return self.critic_ranks[self.trainers.index(trainer)] if self.critic_ranks else None

    def trainer_holds(self, model: str) -> bool:
        return model in self.groups[0] or model in self.offloaded

    def held_by(self, rank: int) -> tuple[str, ...]:
        group = next(i for i, ranks in enumerate(self.ranks) if rank in ranks)
        return self.groups[group] + (self.offloaded if group == 0 else ())

    def serving(self, trainer: int) -> dict[int, tuple[str, ...]]:
        """rank -> the models it computes for trainer rank `trainer` (the ranks of the other groups)."""
        i = self.trainers.index(trainer)
        return {ranks[i % len(ranks)]: g for g, ranks in zip(self.groups[1:], self.ranks[1:], strict=True)}

    def trainers_of(self, rank: int) -> list[int]:
        """The trainer ranks that serving rank `rank` computes for."""
        return [t for t in self.trainers if rank in self.serving(t)]


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
    """Ranks for the plan's groups, in order, the actor's group first; refusing what the run time cannot run yet
    (say so, and what would run)."""
    on_devices = [g for g in plan.groups if g.devices]
    trainer = next(g for g in on_devices if "actor" in g.models)  # the planner puts trained models on devices
    order = [trainer, *(g for g in on_devices if g is not trainer)]
    if any(g.shard > 1 for g in order) or sum(g.devices for g in order) != world_size:
        raise StageFailed(f"stage {stage!r}: placement {plan.describe()} needs sharded groups, which PPO does not run "
                          f"yet: give every group whole replicas on {world_size} processes (sharding: ddp), e.g. "
                          "placement: split, or all four models on every process (placement: colocated or offload)")
    if any("critic" in g.models and g.devices != trainer.devices for g in order[1:]):
        raise StageFailed(f"stage {stage!r}: placement {plan.describe()} gives the critic apart from the actor "
                          "another number of processes than the actor: each actor replica trains with a critic "
                          "replica of its own; give both groups as many processes (e.g. groups of equal size), or "
                          "group the critic with the actor")
    starts = [sum(g.devices for g in order[:i]) for i in range(len(order))]
    offloaded = tuple(m for g in plan.groups if not g.devices for m in g.models)
    return Roles(tuple(g.models for g in order),
                 tuple(tuple(range(a, a + g.devices)) for a, g in zip(starts, order, strict=True)), offloaded)


@dataclass
class Scoring:
    """The trainer's view of the frozen models (and of a critic in another rank): `submit` a rollout batch, then
    `results` {model: tensor}. Local models compute at submit; serving ranks compute while the trainer runs its own
    forward."""

    local: Frozen
    serving: dict[int, tuple[str, ...]] = field(default_factory=dict)
    world: Any = None
    _pending: dict[str, Any] = field(default_factory=dict)

    def submit(self, batch: Any, texts: list[str], prompts: list[Any]) -> None:
        for rank in self.serving:
            _send(self.world, ("score", (batch, texts, prompts)), rank)
        self._pending = compute_frozen(self.local, batch, texts, prompts)

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


Handler = Callable[[Any], Any]
NO_REPLY = object()  # a handler's return value: the trainer expects no answer to this request


def serve(world: Any, handlers: dict[str, Handler], trainers: list[int]) -> int:
    """A serving rank: answer every request its trainers send — (kind, payload) to `handlers[kind]`, whose result
    goes back unless it is NO_REPLY — until each says it is done; the rollout batches scored ("score" requests).
    Trainer replicas are answered in turn: they run in step, one request each."""
    active, served = list(trainers), 0
    while active:
        for trainer in list(active):
            message = _recv(world, trainer)
            if message is None:
                active.remove(trainer)
                continue
            kind, payload = message
            reply = handlers[kind](payload)
            if reply is not NO_REPLY:
                _send(world, reply, trainer)
            served += kind == "score"
    return served


def scorer(frozen: Frozen) -> dict[str, Handler]:
    """The handler of a rank of frozen models: each rollout batch's scores (compute_frozen)."""
    return {"score": lambda request: compute_frozen(frozen, *request)}


@dataclass
class Link:
    """Two ranks each running one half of a PPO update (rl.ppo.Partner): after every minibatch's backward they swap
    gradient norms and statistics, the trainer (`first`) sending first."""

    world: Any
    peer: int
    first: bool

    def exchange(self, norms: dict[str, float], stats: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
        if self.first:
            _send(self.world, (norms, stats), self.peer)
            return _recv(self.world, self.peer)
        theirs = _recv(self.world, self.peer)
        _send(self.world, (norms, stats), self.peer)
        return theirs


@dataclass
class RemoteCritic:
    """The trainer's handle on a critic training in another rank (see the module doc); that rank answers with
    `critic_handlers`. Checkpoint and published files travel as bytes through the process group, so the
    trainer's checkpoint holds the critic's files exactly as a colocated run writes them (model-critic.safetensors,
    optim-critic.pt, sched-critic.pt): a run may resume under another placement."""

    world: Any
    rank: int

    @property
    def link(self) -> Link:
        return Link(self.world, self.rank, first=True)

    def update(self, rollout: Any, advantages: Any, returns: Any, generator: Any) -> None:
        """Start the critic's half of the update on this rollout; call before the policy's half (ppo_update with
        `partner=self.link`), which draws from `generator` in the same state."""
        _send(self.world, ("update", (rollout, advantages, returns, generator.get_state())), self.rank)

    def checkpoint(self, d: Path) -> None:
        """The critic's weights, optimizer and schedule into checkpoint dir d."""
        _write_files(self._ask("checkpoint"), d)

    def restore(self, d: Path) -> None:
        """Load them from checkpoint dir d into the critic's rank."""
        files = {f.name: f.read_bytes() for f in sorted(d.glob("*-critic.*"))}
        if not files:
            raise OSError(f"no critic files (model-critic.safetensors, ...) in {d}")
        _send(self.world, ("restore", files), self.rank)

    def publish(self, out: Path) -> None:
        """The trained value model, saved by the critic's rank, into dir `out`."""
        _write_files(self._ask("publish"), out)

    def _ask(self, kind: str) -> Any:
        _send(self.world, (kind, None), self.rank)
        return _recv(self.world, self.rank)


def critic_handlers(checkpointer: Any, update: Callable[[Any, Any], None], save: Callable[[Path], None]
                    ) -> dict[str, Handler]:
    """What a critic's rank does for the trainer beside scoring (its "score" handler adds V_old to the frozen
    models' results): `update((rollout, advantages, returns), generator)` runs the value half of an update and
    steps the critic's schedule; `checkpointer` (train.Checkpointer over the critic, its optimizer and schedule)
    writes and reads the checkpoint files; `save(dir)` writes the value model to publish."""
    import torch

    def run_update(request: Any) -> Any:
        generator = torch.Generator()
        generator.set_state(request[-1])
        update(request[:-1], generator)
        return NO_REPLY

    def restore(files: dict[str, bytes]) -> Any:
        with tempfile.TemporaryDirectory() as tmp:
            _write_files(files, Path(tmp))
            checkpointer.read_weights(Path(tmp))
        return NO_REPLY

    return {"update": run_update, "restore": restore, "checkpoint": lambda _: _read_files(checkpointer.write_weights),
            "publish": lambda _: _read_files(save)}


def _read_files(write: Callable[[Path], None]) -> dict[str, bytes]:
    """What `write(dir)` puts in a fresh dir, {name: bytes} (flat)."""
    with tempfile.TemporaryDirectory() as tmp:
        write(Path(tmp))
        return {f.name: f.read_bytes() for f in sorted(Path(tmp).iterdir()) if f.is_file()}


def _write_files(files: dict[str, bytes], d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (d / name).write_bytes(data)


def compute_frozen(frozen: Frozen, batch: Any, texts: list[str], prompts: list[Any]) -> dict[str, Any]:
    """What the frozen models compute for a rollout batch, without grad."""
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
