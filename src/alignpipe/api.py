"""The Python API, mirroring the CLI: load/validate/run pipelines, run one stage, query a workspace.

    import alignpipe.api as ap
    pipe = ap.load("pipeline.yaml")            # or ap.load() for the built-in default
    result = ap.run(pipe, workspace="ws")      # RunResult: status, run_id, per-stage states
    ws = ap.Workspace("ws")
    ws.lineage(ws.resolve("ppo.policy"))
"""

from __future__ import annotations

import importlib.resources
import os
import sys
from pathlib import Path
from typing import Any

from alignpipe.pipeline.entry import execute, manual_task
from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.executors import LocalExecutor, RayExecutor
from alignpipe.pipeline.journal import Journal
from alignpipe.pipeline.matrix import split_ref
from alignpipe.pipeline.runner import Reporter, Runner, RunOptions, RunResult
from alignpipe.pipeline.spec import Machine, Pipeline, load_pipeline, pipeline_from_dict
from alignpipe.pipeline.store import Artifact, Store

Executor = LocalExecutor | RayExecutor
BUILTIN = {"default": "rlhf.yaml", "example": "example.yaml", "overoptimization": "overoptimization.yaml"}


def builtin_path(name: str = "default") -> Path:
    if name not in BUILTIN:
        raise UserError(f"no built-in example {name!r}; examples: {', '.join(n for n in BUILTIN if n != 'default')}")
    return Path(str(importlib.resources.files("alignpipe") / "examples" / BUILTIN[name]))


def load(path: str | os.PathLike | None = None, *, builtin: str = "default", machine: Machine | None = None
         ) -> Pipeline:
    """Load and validate a pipeline file; with no path, the built-in pipeline (workspace under the cwd).
    Resources are checked against `machine` (default: this machine; a Ray executor's is its cluster)."""
    if path is None:  # the same loader as a user's file (duplicate keys refused); its workspace under the cwd
        return load_pipeline(builtin_path(builtin), machine=machine, base_dir=Path.cwd())
    base = str(Path(path).resolve().parent)
    if base not in sys.path:  # user stages (`mymodule:func`) next to the spec import like DAG files
        sys.path.insert(0, base)
    return load_pipeline(path, machine=machine)


def from_dict(data: dict[str, Any], base_dir: str | os.PathLike | None = None) -> Pipeline:
    return pipeline_from_dict(data, base_dir=base_dir)


def run(  # noqa: PLR0913 — one keyword per `alignpipe run` option
        pipeline: Pipeline | str | os.PathLike | None = None, *, workspace: str | os.PathLike | None = None,
        from_: str | None = None, until: str | None = None, only: str | None = None, force: tuple[str, ...] = (),
        wait: bool = False, report: Reporter | None = None, executor: Executor | None = None,
        verify: str | None = None, new_journal: bool = False, mlflow: str | None = None) -> RunResult:
    """Run a pipeline; `executor` defaults to local processes (see alignpipe.pipeline.executors for Ray).
    `mlflow` (else $ALIGNPIPE_MLFLOW, else the spec's `tracking.mlflow`) tracks the run in MLflow."""
    pipe = pipeline if isinstance(pipeline, Pipeline) else load(pipeline)
    opts = RunOptions(workspace=str(workspace) if workspace else None, from_=from_, until=until, only=only,
                      force=tuple(force), wait=wait, verify=verify, new_journal=new_journal)
    from alignpipe.integrations.mlflow import tracked  # imports mlflow only when a URI is set

    with tracked(pipe, pipe.workspace(opts.workspace), report, mlflow) as reporter:
        return Runner(pipe, opts, reporter, executor=executor).run()


def run_stage(uses: str, *, inputs: dict[str, str], params: dict[str, Any], out: str | os.PathLike,
              seed: int = 0) -> dict[str, str]:
    """Manual mode: run one stage on explicit paths; outputs land in `out` with their manifest."""
    return execute(manual_task(uses, inputs, params, str(out), seed))


def export(platform: str, pipeline: Pipeline | str | os.PathLike, out: str | os.PathLike, *, force: bool = False,
           alignpipe: str = "alignpipe", workspace: str | os.PathLike | None = None,
           images: dict[str, str] | None = None) -> list[Path]:
    """Write `pipeline` as `platform`'s files (kfp, airflow, prefect, metaflow, dvc) into `out`; see
    alignpipe.export. Validated as `validate` does, except resources against this machine (the platform places
    stages). `images`: stage -> container image ("*": every stage) for KFP and Airflow's KubernetesPodOperator."""
    from alignpipe.export import check_platform, render, write
    from alignpipe.export.ir import build
    from alignpipe.export.task import load_for_platform

    check_platform(platform, images)
    if isinstance(pipeline, Pipeline):
        if not Path(pipeline.source).is_file():
            raise UserError("export: the pipeline must come from a YAML file (every exported task loads it); "
                            "save it and pass its path")
        pipeline = pipeline.source
    pipe = load_for_platform(pipeline)
    ir = build(pipe, alignpipe=alignpipe, workspace=str(workspace) if workspace else None, images=images)
    return write(render(platform, ir), out, force=force)


class Workspace:
    """Read side of a workspace: artifacts, tags, lineage, verification, gc, runs, status, logs."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()
        self.store = Store(self.root)
        self.journal = Journal(self.root, readonly=True)

    def close(self) -> None:
        self.journal.close()

    def artifacts(self) -> list[Artifact]:
        return self.store.all()

    def resolve(self, ref: str) -> str:
        """An artifact id from an id/prefix, a tag, or a stage name (`stage` or `stage.output`, latest run)."""
        stage, output = split_ref(ref)  # a matrix branch's values may hold dots: ppo@lr=0.5.policy
        att = self.journal.last_attempt(stage)
        if att is not None and att.outputs:
            outs = att.outputs
            if output:
                if output not in outs:
                    raise UserError(f"stage {stage!r} has no output {output!r}; it has: {', '.join(outs)}")
                return outs[output]
            if len(outs) == 1:
                return next(iter(outs.values()))
            raise UserError(f"stage {stage!r} has several outputs ({', '.join(outs)}); name one as {stage}.NAME")
        return self.store.resolve_id(ref)

    def show(self, ref: str) -> Artifact:
        return self.store.get(self.resolve(ref))

    def lineage(self, ref: str) -> dict[str, Any]:
        return self.store.lineage(self.resolve(ref))

    def tag(self, name: str, ref: str) -> str:
        return self.store.tag(name, self.resolve(ref))

    def verify(self, ref: str | None = None) -> dict[str, list[str]]:
        ids = [self.resolve(ref)] if ref else self.store.ids()
        return {i: self.store.verify(i) for i in ids}

    def gc(self, dry_run: bool = False) -> dict[str, list[str]]:
        from alignpipe.pipeline.journal import WorkspaceLock

        with WorkspaceLock(self.root).acquire(wait=False):
            return self.store.gc(self.journal.referenced_artifacts(), dry_run=dry_run, busy_work=set())

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.journal.runs(limit)

    def status(self, run: str | None = None) -> tuple[str, list[Any]]:
        run_id = self.journal.resolve_run(run)
        return run_id, self.journal.attempts(run_id)

    def log(self, stage: str) -> str:
        att = self.journal.last_attempt(stage, executed=True)
        if att is None or att.log is None:
            raise UserError(f"stage {stage!r} has no executed attempt in {self.root}; see `alignpipe status`")
        return Path(att.log).read_text(errors="replace")

    def metrics(self, stage: str) -> dict[str, list[tuple[int, float]]]:
        """The metric series (name -> [(step, value)]) the stage's latest executed attempt logged."""
        att = self.journal.last_attempt(stage, executed=True)
        if att is None:
            raise UserError(f"stage {stage!r} has no executed attempt in {self.root}; see `alignpipe status`")
        return self.journal.metrics(att.fingerprint)
