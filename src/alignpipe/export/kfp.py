"""Kubeflow Pipelines v2: pipeline.py (the kfp DSL; `python pipeline.py` compiles it to pipeline.yaml, `--local`
runs it with kfp.local's SubprocessRunner).

Every stage is a task of one lightweight component that runs `alignpipe stage exec` (a component per container
image). Spec -> KFP: retries -> `set_retry(n, backoff_duration="1s", backoff_factor=2)`; resources -> cpu/memory
requests and limits, `set_accelerator_type("nvidia.com/gpu")` + `set_accelerator_limit(n)`; cache ->
`set_caching_options(False)` on every task (KFP's cache keys on the task's inputs, which do not change when a
stage's upstream artifacts do: it would serve stale results; alignpipe's cache decides); dependencies ->
`.after()`; KFP has no task timeout (alignpipe enforces the stage's). On a cluster, give an --image with alignpipe
installed and mount the workspace into the pods (kfp-kubernetes `mount_pvc`). The platform run id is the
pipeline job's id (`dsl.PIPELINE_JOB_ID_PLACEHOLDER`).
"""

from __future__ import annotations

import math
import re

from alignpipe.export._py import guarded_imports, header
from alignpipe.export.ir import PipelineIR, StageIR

DEFAULT_IMAGE = "python:3.11"  # what kfp's lightweight components default to; it has no alignpipe: pass --image


def render(ir: PipelineIR) -> dict[str, str]:
    doc, consts = header(ir, "a Kubeflow Pipelines v2 pipeline", "python pipeline.py   (writes pipeline.yaml to "
                         "upload) or python pipeline.py --local")
    images = sorted({s.image or DEFAULT_IMAGE for s in ir.stages})
    components = {img: "stage_exec" if i == 0 else f"stage_exec_{i}" for i, img in enumerate(images)}
    comp_defs = "\n".join(f"{name} = dsl.component(_stage_exec, base_image={img!r})"
                          for img, name in components.items())
    tasks = "\n".join(_task(s, components[s.image or DEFAULT_IMAGE], ir) for s in ir.stages)
    # no `from __future__ import annotations`: kfp reads the component's parameter types at run time
    code = f'''{doc}import sys

{guarded_imports(["from kfp import compiler, dsl, local"], "kfp", "the Kubeflow Pipelines SDK (kfp 2)")}
{consts}

def _stage_exec(alignpipe: str, pipeline: str, workspace: str, stage: str, run_id: str):
    """Run one alignpipe stage; a non-zero exit fails the task (and KFP retries it)."""
    import shutil
    import subprocess

    if shutil.which(alignpipe) is None:
        raise RuntimeError(f"no alignpipe executable {{alignpipe!r}} where this task runs: use an image with "
                           "alignpipe (--image), or re-export with --alignpipe PATH")
    subprocess.run([alignpipe, "stage", "exec", pipeline, stage, "-w", workspace, "--platform", "kfp",
                    "--platform-run-id", run_id], check=True)


{comp_defs}


@dsl.pipeline(name={re.sub("[^a-z0-9-]", "-", ir.name.lower())!r},
              description={f"alignpipe pipeline {ir.name!r} from {ir.spec_path}"!r})
def {ir.ident}(alignpipe: str = ALIGNPIPE, pipeline: str = PIPELINE, workspace: str = WORKSPACE):
    args = dict(alignpipe=alignpipe, pipeline=pipeline, workspace=workspace, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
{tasks}


if __name__ == "__main__":
    if "--local" in sys.argv:  # each task a subprocess in this Python environment (no cluster, no Docker)
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root="kfp-local")
        {ir.ident}()
    else:
        compiler.Compiler().compile({ir.ident}, "pipeline.yaml")
'''
    return {"pipeline.py": code}


def _task(s: StageIR, component: str, ir: PipelineIR) -> str:
    calls = [f'set_display_name({s.name!r})', "set_caching_options(False)",
             f'set_cpu_request("{s.cpus:g}")', f'set_cpu_limit("{s.cpus:g}")']
    if s.memory:
        mem = f"{math.ceil(s.memory / 2**20)}Mi"
        calls += [f'set_memory_request("{mem}")', f'set_memory_limit("{mem}")']
    if s.gpus:
        calls += ['set_accelerator_type("nvidia.com/gpu")', f"set_accelerator_limit({s.gpus})"]
    if s.retries:
        calls.append(f'set_retry({s.retries}, backoff_duration="1s", backoff_factor=2)')
    if s.deps:
        calls.append(f"after({', '.join(ir.stage(d).ident for d in s.deps)})")
    pad = " " * (len(s.ident) + 8)
    chain = "".join(f"\n{pad}.{c}" for c in calls)
    return f"    {s.ident} = ({component}(stage={s.name!r}, **args){chain})"
