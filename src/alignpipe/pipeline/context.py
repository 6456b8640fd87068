"""The object a stage's `run(ctx)` receives: params, inputs, outputs, work dir, checkpoints, metrics.

A stage never knows which executor runs it. Everything it reports (progress, metrics) goes to an events
file (JSON lines) in its attempt directory; the runner tails that file and records it in the journal.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from alignpipe.pipeline.store import fsync_dir, fsync_tree


@dataclass(frozen=True)
class InputArtifact:
    name: str
    path: Path
    id: str
    manifest: dict[str, Any] | None = None  # None for external inputs

    @property
    def summary(self) -> dict[str, Any]:
        return (self.manifest or {}).get("summary", {})


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path


class Checkpoints:
    """Atomic checkpoints under `<work_dir>/ckpt`: `step-<n>` dirs, complete only once renamed into place.

    save() writes into a temporary sibling and renames it, so a kill at any instant leaves either the old
    newest checkpoint or the new one, never a half-written one that looks complete.
    """

    def __init__(self, root: Path, keep: int = 2, mirror: CheckpointMirror | None = None):
        self.root = root
        self.keep = keep
        self.mirror = mirror

    def _complete(self) -> list[Checkpoint]:
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            if p.name.startswith("step-") and (p / ".complete").exists():
                out.append(Checkpoint(int(p.name[5:]), p))
        return sorted(out, key=lambda c: c.step)

    def latest(self) -> Checkpoint | None:
        done = self._complete()
        return done[-1] if done else None

    def save(self, step: int, writer: Callable[[Path], None]) -> Checkpoint:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{step}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        writer(tmp)
        (tmp / ".complete").write_text(str(step))
        fsync_tree(tmp)
        final = self.root / f"step-{step:09d}"
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(self.root)
        for old in self._complete()[: -self.keep]:
            shutil.rmtree(old.path, ignore_errors=True)
        if self.mirror is not None:
            self.mirror.upload(final)
            self.mirror.prune({c.path.name for c in self._complete()})
        return Checkpoint(step, final)

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        if self.mirror is not None:
            self.mirror.clear()


class CheckpointMirror:
    """A stage's checkpoints copied into its workspace in a bucket (work/<fingerprint>/ckpt/step-N/), so a stage
    killed on one machine resumes on another. A step counts there once its .complete marker is uploaded, after
    every other file of it; `restore` brings the newest complete one to a machine that has none."""

    def __init__(self, fs: Any, prefix: str):
        self.fs = fs
        self.prefix = prefix

    def upload(self, step_dir: Path) -> None:
        files = [p for p in sorted(step_dir.rglob("*")) if p.is_file() and p.name != ".complete"]
        rel = f"{self.prefix}/{step_dir.name}"
        self.fs.put_files((p, f"{rel}/{p.relative_to(step_dir).as_posix()}") for p in files)
        self.fs.write_bytes(f"{rel}/.complete", (step_dir / ".complete").read_bytes())

    def prune(self, keep: set[str]) -> None:
        for name in self.fs.listdir(self.prefix):
            if name not in keep:
                self.fs.rmtree(f"{self.prefix}/{name}")

    def restore(self, root: Path) -> Checkpoint | None:
        """Download the newest complete remote step into `root` (atomically: a half download is not a step)."""
        listing = self.fs.find(self.prefix)
        steps = sorted({k.split("/", 1)[0] for k in listing if k.endswith("/.complete")})
        if not steps:
            return None
        name = steps[-1]
        tmp = root / f".tmp-restore-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        self.fs.get_files((f"{self.prefix}/{k}", tmp / k[len(name) + 1:]) for k in listing
                          if k.startswith(f"{name}/"))
        os.rename(tmp, root / name)
        fsync_dir(root)
        return Checkpoint(int(name[5:]), root / name)

    def clear(self) -> None:
        self.fs.rmtree(self.prefix)


@dataclass
class StageContext:
    stage: str
    uses: str
    params: BaseModel
    seed: int
    inputs: dict[str, InputArtifact]
    out_root: Path
    work_dir: Path
    output_kinds: dict[str, str]
    events_path: Path | None = None
    attempt: int = 1
    run_id: str | None = None
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    ckpt_mirror: CheckpointMirror | None = None  # a bucket workspace's copy of the checkpoints (entry sets it)
    _last_progress: float = 0.0
    resources: dict[str, Any] = field(default_factory=dict)  # the stage's resources (world size, placement)
    rank: int = 0  # this process's rank in a multi-process stage (alignpipe.distributed); rank 0 publishes

    # -- inputs and outputs -------------------------------------------------------------------------------
    def input_path(self, name: str) -> Path:
        if name not in self.inputs:
            raise KeyError(f"stage {self.stage!r} has no input {name!r} (has: {', '.join(self.inputs) or 'none'})")
        return self.inputs[name].path

    def output_dir(self, name: str = "out") -> Path:
        """An empty directory to write output `name` into; it is published when run() returns."""
        if name not in self.output_kinds:
            declared = ", ".join(self.output_kinds)
            raise KeyError(f"stage {self.stage!r} declares no output {name!r} (declares: {declared})")
        d = self.out_root / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def annotate(self, output: str = "out", **fields: Any) -> None:
        """Attach small JSON facts (metrics, normalization, counts) to an output's manifest `summary`."""
        self.summaries.setdefault(output, {}).update(fields)

    @property
    def checkpoints(self) -> Checkpoints:
        return Checkpoints(self.work_dir / "ckpt", mirror=self.ckpt_mirror)

    # -- reporting ------------------------------------------------------------------------------------------
    def _emit(self, event: dict[str, Any]) -> None:
        if self.events_path is None:
            return
        event["t"] = time.time()
        with open(self.events_path, "a") as f:
            f.write(json.dumps(event) + "\n")

    def log(self, msg: str) -> None:
        who = f"{self.stage} rank {self.rank}" if self.rank else self.stage
        print(f"[{who}] {msg}", file=sys.stderr, flush=True)

    def log_metrics(self, step: int, **values: float) -> None:
        clean = {k: float(v) for k, v in values.items()}
        self._emit({"type": "metrics", "step": int(step), "values": clean})

    def notice(self, message: str, **fields: Any) -> None:
        """Something a person must see or act on while the stage runs (e.g. a labeling page's address): the
        runner prints it, and logs it in the stage's log."""
        self.log(message)
        self._emit({"type": "notice", "message": message, "fields": fields})

    def progress(self, done: float, total: float, desc: str = "") -> None:
        now = time.monotonic()
        if done < total and now - self._last_progress < 0.25:  # rate-limit; the last tick always goes out
            return
        self._last_progress = now
        self._emit({"type": "progress", "done": done, "total": total, "desc": desc})
