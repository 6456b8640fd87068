"""Checkpoint state for our training loops: everything needed to continue a run bit-identically.

One checkpoint (a `step-<n>` dir written atomically by the engine's `ctx.checkpoints`) holds:
    model-<name>.safetensors   weights of each model (tied weights stored once; LoRA-wrapped models whole)
    optim-<name>.pt            optimizer state_dicts (Adam moments, step counts, param-group lrs)
    sched-<name>.pt            LR scheduler state_dicts
    rng.pt                     torch CPU (and CUDA) RNG states and named torch.Generator states
    state.json                 step, python and numpy RNG states, data order (EpochBatches: epoch, position),
                               the free stage state dict, the torch thread count, the world size and a key of the
                               run's config
    rng-rank<r>.pt, state-rank<r>.json   rank r's own RNG states, data position and stage state (r ≥ 1 of a
                               multi-process stage; rank 0's are rng.pt and state.json). Models, optimizers and
                               schedulers are the same on every rank (data parallel): rank 0 writes them, every rank
                               writes its own files into the same directory before it is renamed into place
    sharded/                   FSDP-sharded models and optimizers instead of model-*/optim-* (`sharded`): every
                               rank's shards, written and read by torch.distributed.checkpoint

Usage in a stage (see `alignpipe.train` for the whole loop):

    ckpt = Checkpointer(ctx.checkpoints, key=run_key(ctx), models={"model": model},
                        optimizers={"model": opt}, schedulers={"model": sched}, batches={"train": order})
    resumed = ckpt.restore()            # None on a fresh start; otherwise everything above is loaded in place
    start = resumed.step if resumed else 0
    ...
    ckpt.save(step, state={"tokens": tokens})   # JSON-serializable stage state (e.g. the KL coefficient)

Restore after building every object (models, optimizers, schedulers, batches): building may draw from the
global RNGs, and restoring last overwrites those draws with the checkpointed states.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from alignpipe.pipeline.context import Checkpoints
from alignpipe.pipeline.errors import StageFailed
from alignpipe.train.batches import EpochBatches
from alignpipe.train.seeding import capture_rng_state, restore_rng_state

FORMAT = 1


@dataclass(frozen=True)
class Resumed:
    step: int
    state: dict[str, Any]  # the stage state given to save()
    path: Path  # the checkpoint dir (for extra files written by save(files=...))


def run_key(ctx: Any) -> str:
    """A key of what a stage run computes: stage type, params, input artifact ids and seed.

    Work dirs are already keyed by fingerprint (the runner's, and manual mode's `DIR.work/<fingerprint>`); this is
    a second guard: a checkpoint written for other params or inputs (a copied or hand-edited work dir) is ignored
    instead of silently resumed.
    """
    payload = {"uses": ctx.uses, "params": ctx.params.model_dump(mode="json"), "seed": ctx.seed,
               "inputs": {name: inp.id for name, inp in sorted(ctx.inputs.items())}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass
class Checkpointer:
    """Saves and restores models, optimizers, schedulers, RNG states, data order and stage state together."""

    checkpoints: Checkpoints
    key: str = ""
    models: Mapping[str, nn.Module] = field(default_factory=dict)
    optimizers: Mapping[str, torch.optim.Optimizer] = field(default_factory=dict)
    schedulers: Mapping[str, Any] = field(default_factory=dict)  # anything with state_dict/load_state_dict
    generators: Mapping[str, torch.Generator] = field(default_factory=dict)
    batches: Mapping[str, EpochBatches] = field(default_factory=dict)
    log: Callable[[str], None] = print
    world: Any = None  # alignpipe.distributed.world.World of a multi-process stage (None: one process)
    sharded: bool = False  # models and optimizers are FSDP-sharded: every rank saves and loads its shards

    @property
    def _rank(self) -> int:
        return self.world.rank if self.world is not None else 0

    def save(self, step: int, state: Mapping[str, Any] | None = None,
             files: Callable[[Path], None] | None = None) -> Path:
        """Write checkpoint `step` atomically; `files(dir)` may add stage-specific files. Returns its dir. In a
        multi-process stage every rank calls it at the same step (it synchronizes them)."""

        def write(d: Path) -> None:
            if self.world is not None and self.world.size > 1:
                self.world.broadcast(str(d))  # the other ranks write their own files into d meanwhile
            self.write_weights(d)
            self._write_own(d, step, state)
            if files is not None:
                files(d)
            if self.world is not None:
                self.world.barrier()  # every rank's files are in d before it is renamed into place

        if self._rank > 0:
            d = Path(self.world.broadcast(None))
            if self.sharded:
                self._write_shards(d)
            self._write_own(d, step, state)
            self.world.barrier()
            return d
        return self.checkpoints.save(int(step), write).path

    def write_weights(self, d: Path) -> None:
        """The models, optimizers and schedulers into checkpoint dir d (model-*, optim-*, sched-* or sharded/)."""
        if self.sharded:
            self._write_shards(d)
        for name, model in {} if self.sharded else self.models.items():
            save_model(model, str(d / f"model-{name}.safetensors"))
        for name, opt in {} if self.sharded else self.optimizers.items():
            torch.save(opt.state_dict(), d / f"optim-{name}.pt")
        for name, sched in self.schedulers.items():
            torch.save(sched.state_dict(), d / f"sched-{name}.pt")

    def read_weights(self, d: Path) -> None:
        """write_weights' inverse: load them in place from checkpoint dir d."""
        if self.sharded:
            self._read_shards(d)
        for name, model in {} if self.sharded else self.models.items():
            load_model(model, str(d / f"model-{name}.safetensors"), strict=True)
        for name, opt in {} if self.sharded else self.optimizers.items():
            opt.load_state_dict(torch.load(d / f"optim-{name}.pt", weights_only=True))
        for name, sched in self.schedulers.items():
            sched.load_state_dict(torch.load(d / f"sched-{name}.pt", weights_only=True))

    def _state(self) -> dict[str, Any]:
        """The FSDP-sharded models' and optimizers' state dicts, as torch.distributed.checkpoint reads and writes
        them (an optimizer is named as its model)."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

        return {**{f"model-{n}": get_model_state_dict(m) for n, m in self.models.items()},
                **{f"optim-{n}": get_optimizer_state_dict(self.models[n], o) for n, o in self.optimizers.items()}}

    def _write_shards(self, d: Path) -> None:
        import torch.distributed.checkpoint as dcp

        dcp.save(self._state(), checkpoint_id=str(d / "sharded"))  # collective: every rank writes its shards

    def _read_shards(self, d: Path) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

        state = self._state()
        dcp.load(state, checkpoint_id=str(d / "sharded"))
        for name, model in self.models.items():
            set_model_state_dict(model, state[f"model-{name}"])
        for name, opt in self.optimizers.items():
            set_optimizer_state_dict(self.models[name], opt, state[f"optim-{name}"])

    def _write_own(self, d: Path, step: int, state: Mapping[str, Any] | None) -> None:
        """This rank's RNG states, data position and stage state (rank 0: rng.pt and state.json)."""
        suffix = f"-rank{self._rank}" if self._rank else ""
        rng = capture_rng_state()
        torch.save({"torch": rng.pop("torch"), "cuda": rng.pop("cuda", None),
                    "generators": {n: g.get_state() for n, g in self.generators.items()}}, d / f"rng{suffix}.pt")
        meta = {"format": FORMAT, "key": self.key, "step": int(step), "rng": rng, "threads": torch.get_num_threads(),
                "world": self.world.size if self.world is not None else 1,
                "batches": {n: b.state_dict() for n, b in self.batches.items()}, "state": dict(state or {})}
        (d / f"state{suffix}.json").write_text(json.dumps(meta, sort_keys=True))

    def restore(self, extra: Callable[[Path], None] | None = None) -> Resumed | None:
        """Load the newest complete checkpoint into the registered objects; None if there is none (or it was
        written by a run with another key, which is then discarded). `extra(dir)` restores what save's `files`
        added; its errors are reported as the checkpoint's."""
        latest = self.checkpoints.latest()
        if latest is None:
            return None
        d = latest.path
        meta = json.loads((d / "state.json").read_text())
        if meta.get("format") != FORMAT or meta.get("key") != self.key:
            self.log(f"ignoring checkpoint {d.name}: written by a run with other params, inputs or seed")
            if self.world is not None:
                self.world.barrier()  # every rank has read it before rank 0 removes it
            if self._rank == 0:
                self.checkpoints.clear()
            return None
        try:
            self.read_weights(d)
            if extra is not None:
                extra(d)
            suffix = self._own_suffix(d, meta)
            meta = json.loads((d / f"state{suffix}.json").read_text())
            for name, b in self.batches.items():
                b.load_state_dict(meta["batches"][name])
            rng = torch.load(d / f"rng{suffix}.pt", weights_only=True)
        except (OSError, KeyError, RuntimeError, ValueError) as e:
            raise StageFailed(f"checkpoint {d} cannot be restored ({e}); delete {d.parent} to start over") from None
        for name, gen in self.generators.items():
            gen.set_state(rng["generators"][name])
        restore_rng_state({**meta["rng"], "torch": rng["torch"], **({"cuda": rng["cuda"]} if rng["cuda"] else {})})
        if meta["threads"] != torch.get_num_threads():
            self.log(f"warning: checkpoint written with {meta['threads']} torch threads, resuming with "
                     f"{torch.get_num_threads()}; the result may differ bitwise from an uninterrupted run")
        self.log(f"resuming from checkpoint step {meta['step']}")
        return Resumed(int(meta["step"]), meta["state"], d)

    def _own_suffix(self, d: Path, meta: dict[str, Any]) -> str:
        """This rank's files in checkpoint d: its own, or rank 0's when the checkpoint was written by a smaller
        world (the world size changed between runs; models and optimizers are the same on every rank anyway)."""
        size = self.world.size if self.world is not None else 1
        if meta.get("world", 1) != size:
            self.log(f"warning: checkpoint written by {meta.get('world', 1)} processes, resuming with {size}; the "
                     "result may differ bitwise from an uninterrupted run")
        suffix = f"-rank{self._rank}" if self._rank else ""
        return suffix if (d / f"state{suffix}.json").exists() else ""
