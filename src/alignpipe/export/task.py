"""The platform side of an export: one platform task runs one stage (`alignpipe stage exec`).

A task is `alignpipe run --only STAGE` made safe to run beside its siblings: it takes the workspace lock shared
(an `alignpipe run` or `gc` holds it exclusively and keeps tasks out, and the reverse), marks no other run
abandoned, and records the platform and its run id in the journal and in each published manifest's producer.
Upstream outputs come from the store's cache (the task of an upstream stage published them): a missing one is
a clear error naming the stage to run first, exit 2. Retries are the platform's (mapped from the spec at export
time), so the task itself tries once, unless the platform has none (DVC: `retry_here`); the stage's timeout is
enforced here on every platform.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.runner import Reporter, Runner, RunOptions, RunResult
from alignpipe.pipeline.spec import Machine, Pipeline, validate


def platform_machine(pipe: Pipeline) -> Machine:
    """The platform placed the task on what the spec asked for: a machine as big as the largest stage (all of a
    multi-process stage's processes: they run in the task's machine)."""
    cpus = max(math.ceil(s.resources.total_cpus) for s in pipe.stages.values())
    gpus = max(s.resources.total_gpus for s in pipe.stages.values())
    return Machine(cpus=cpus, gpus=gpus, memory=None)


def load_for_platform(spec: str | os.PathLike, params_file: str | os.PathLike | None = None) -> Pipeline:
    """The pipeline a platform task runs: validated like `alignpipe validate` except that resources are not
    checked against this machine (the platform places stages), and with every stage's params replaced by those
    in `params_file` ({stage: {param: value}}, DVC's params.yaml) when given."""
    from alignpipe import api  # its loader puts the spec's directory on sys.path for user stages

    pipe = api.load(spec, machine=_unbounded())
    if params_file is None:
        return pipe
    overrides = _read_params(Path(params_file), pipe)
    raw = pipe.spec.model_dump(exclude_unset=True)
    for name, params in overrides.items():
        raw["stages"][name]["params"] = params
    return validate(raw, source=f"{params_file} (params of {spec})", base_dir=pipe.base_dir, machine=_unbounded())


def _unbounded() -> Machine:
    return Machine(cpus=10**6, gpus=10**6, memory=None)


def _read_params(path: Path, pipe: Pipeline) -> dict[str, dict[str, Any]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UserError(f"{path}: no such params file") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path}: invalid YAML: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of stage name -> params")
    unknown = sorted(set(data) - set(pipe.stages))
    if unknown:
        raise UserError(f"{path}: {', '.join(map(repr, unknown))} is no stage of {pipe.source}; its stages: "
                        f"{', '.join(pipe.order)}")
    bad = [n for n, v in data.items() if not isinstance(v, dict)]
    if bad:
        raise UserError(f"{path}: {bad[0]}: expected a mapping of param -> value")
    return data


def exec_stage(pipe: Pipeline, stage: str, *, workspace: str | None = None, platform: str,  # noqa: PLR0913
               platform_run_id: str | None = None, outputs_file: str | os.PathLike | None = None,
               report: Reporter | None = None, wait: bool = False, retry_here: bool = False) -> RunResult:
    """Run one stage of `pipe` as a platform task (see the module docstring); returns the run's result.
    `retry_here`: retry inside the task as `alignpipe run` does, for platforms that cannot retry (DVC)."""
    if stage not in pipe.stages:
        raise UserError(f"{pipe.source}: no stage named {stage!r}; stages: {', '.join(pipe.order)}")
    if not retry_here:  # the platform retries (each retry resumes from the stage's checkpoint)
        once = replace(pipe.stages[stage], spec=pipe.stages[stage].spec.model_copy(update={"retries": 0}))
        pipe = replace(pipe, stages={**pipe.stages, stage: once})
    opts = RunOptions(workspace=workspace, only=stage, wait=wait, platform=platform, platform_run_id=platform_run_id)
    result = Runner(pipe, opts, report, machine=platform_machine(pipe)).run()
    if outputs_file is not None and result.status == "done":
        _write_outputs(Path(outputs_file), result.stages[stage].outputs)
    return result


def _write_outputs(path: Path, outputs: dict[str, str]) -> None:
    """The stage's artifact ids, for platforms that track files (DVC's outs): changes iff the content does."""
    from alignpipe.pipeline.fs import write_atomic

    write_atomic(path, (json.dumps({"outputs": outputs}, indent=1, sort_keys=True) + "\n").encode())
