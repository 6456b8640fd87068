"""Prefect 3: flow.py, one task per stage, submitted to a thread pool so independent stages run in parallel.

Spec -> Prefect: retries -> `retries` with exponential `retry_delay_seconds`; timeout -> `timeout_seconds`;
resources -> the tag `alignpipe:gpu` on GPU stages, to cap them with a tag concurrency limit (Prefect has no
per-task cpu/memory/gpu request); cache -> `cache_policy=NO_CACHE`, `persist_result=False`
(alignpipe's cache decides); dependencies -> `wait_for`. Each task records `flow_run.id` as its platform run id.
"""

from __future__ import annotations

from alignpipe.export._py import guarded_imports, header, stage_exec_function
from alignpipe.export.ir import PipelineIR, StageIR

IMPORTS = ["from prefect import flow, task", "from prefect.cache_policies import NO_CACHE",
           "from prefect.futures import wait", "from prefect.runtime import flow_run",
           "from prefect.task_runners import ThreadPoolTaskRunner"]


def render(ir: PipelineIR) -> dict[str, str]:
    doc, consts = header(ir, "a Prefect 3 flow", "python flow.py   (a local run; or deploy it as any flow)")
    tasks = "\n".join(_task(s) for s in ir.stages)
    body = "\n".join(f"    {s.ident} = {s.ident}_task.submit({s.name!r}, str(flow_run.id){_wait_for(ir, s)})"
                     for s in ir.stages)
    code = f'''{doc}from __future__ import annotations

import shutil
import subprocess
import sys

{guarded_imports(IMPORTS, "prefect", "Prefect 3")}
{consts}

{stage_exec_function("prefect")}

stage_task = task(stage_exec, cache_policy=NO_CACHE, persist_result=False)
{tasks}


@flow(name={ir.name!r}, task_runner=ThreadPoolTaskRunner(max_workers={_workers(ir)}))
def {ir.ident}() -> None:
{body}
    futures = [{", ".join(s.ident for s in ir.stages)}]
    wait(futures)
    for f in futures:
        f.result()  # the first failed stage fails the flow run


if __name__ == "__main__":
    {ir.ident}()
'''
    return {"flow.py": code}


def _task(s: StageIR) -> str:
    opts = [f"name={s.name!r}", f"tags={_tags(s)!r}", f"retries={s.retries}"]
    if s.retries:
        opts.append(f"retry_delay_seconds={[round(x, 3) for x in s.backoff()]!r}")
    if s.timeout:
        opts.append(f"timeout_seconds={s.timeout:g}")
    return f"{s.ident}_task = stage_task.with_options({', '.join(opts)})"


def _wait_for(ir: PipelineIR, s: StageIR) -> str:
    return f", wait_for=[{', '.join(ir.stage(d).ident for d in s.deps)}]" if s.deps else ""


def _tags(s: StageIR) -> list[str]:
    return ["alignpipe", "alignpipe:gpu"] if s.gpus else ["alignpipe"]


def _workers(ir: PipelineIR) -> int:
    """The widest set of independent stages; Prefect's pool needs more threads than a task has tags."""
    return max(max(map(len, ir.levels())), 1 + max(len(_tags(s)) for s in ir.stages))
