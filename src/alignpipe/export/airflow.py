"""Airflow 3: one DAG file, one task per stage (`airflow.sdk.DAG`; put the file in a dags folder).

Spec -> Airflow: retries -> `retries`, `retry_delay` 1 s with `retry_exponential_backoff=2` (Airflow adds
jitter); timeout -> `execution_timeout`; resources -> `pool_slots` (CPUs, in `pool`: size a pool to the
machine to cap concurrent CPU use) and `resources` (cpus, ram, gpus: honored by executors that read it);
dependencies -> `>>`. A stage with a container image becomes a KubernetesPodOperator with those resources as
container limits (mount the workspace into the pod). Airflow has no task cache of its own: alignpipe's decides.
Each task records the DAG run id (`$AIRFLOW_CTX_DAG_RUN_ID`, `{{ run_id }}` in a pod) as its platform run id.
"""

from __future__ import annotations

import math

from alignpipe.export._py import header
from alignpipe.export.ir import PipelineIR, StageIR


def render(ir: PipelineIR) -> dict[str, str]:
    doc, consts = header(ir, "an Airflow 3 DAG", f"put this file in a dags folder; `python {ir.ident}_dag.py` runs "
                         "it once with dag.test()")
    kpo = any(s.image for s in ir.stages)
    imports = ["import datetime"] * any(s.retries or s.timeout for s in ir.stages) + ["import shlex", "",
               "from airflow.providers.standard.operators.bash import BashOperator", "from airflow.sdk import DAG"]
    if kpo:
        imports.insert(-1, "from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator")
        imports.append("from kubernetes.client import models as k8s")
    tasks = "\n".join(_bash(s) if s.image is None else _pod(s) for s in ir.stages)
    edges = "\n".join(f"    [{', '.join(ir.stage(d).ident for d in s.deps)}] >> {s.ident}"
                      for s in ir.stages if s.deps)
    code = f'''{doc}from __future__ import annotations

{chr(10).join(imports)}

{consts}POOL = "default_pool"  # each task takes as many slots as it asks CPUs: size a pool to cap CPU use


def stage_args(stage: str, run_id: str) -> list[str]:
    return ["stage", "exec", PIPELINE, stage, "-w", WORKSPACE, "--platform", "airflow", "--platform-run-id", run_id]


def stage_command(stage: str) -> str:
    """The shell command of a stage's task; Airflow exports the DAG run id as AIRFLOW_CTX_DAG_RUN_ID."""
    return shlex.join([ALIGNPIPE, *stage_args(stage, "")][:-1]) + ' "$AIRFLOW_CTX_DAG_RUN_ID"'


with DAG(dag_id={ir.name!r}, schedule=None, catchup=False, tags=["alignpipe"],
         doc_md="alignpipe pipeline {ir.name!r} from {ir.spec_path}") as dag:
{tasks}
{edges}


if __name__ == "__main__":
    dag.test()
'''
    return {f"{ir.ident}_dag.py": code}


def _common(s: StageIR) -> list[str]:
    # task ids allow letters, digits, '_', '-' and '.': a sweep branch's name is shown, its identifier is the id
    opts = [f"task_id={s.ident!r}"] + ([f"task_display_name={s.name!r}"] if s.ident != s.name else [])
    opts.append(f"retries={s.retries}")
    if s.retries:
        opts += ["retry_delay=datetime.timedelta(seconds=1)", "retry_exponential_backoff=2.0"]
    if s.timeout:
        opts.append(f"execution_timeout=datetime.timedelta(seconds={s.timeout:g})")
    return opts


def _bash(s: StageIR) -> str:
    opts = [*_common(s), f"bash_command=stage_command({s.name!r})", "pool=POOL", f"pool_slots={math.ceil(s.cpus)}"]
    res = {"cpus": s.cpus} | ({"ram": s.memory // 2**20} if s.memory else {}) | ({"gpus": s.gpus} if s.gpus else {})
    if res != {"cpus": 1.0}:
        opts.append(f"resources={res!r}")
    return f"    {s.ident} = BashOperator({', '.join(opts)})"


def _pod(s: StageIR) -> str:
    limits = {"cpu": f"{s.cpus:g}"} | ({"memory": f"{s.memory // 2**20}Mi"} if s.memory else {}) \
        | ({"nvidia.com/gpu": str(s.gpus)} if s.gpus else {})
    opts = [*_common(s), f"name={s.name!r}", f"image={s.image!r}", "cmds=[ALIGNPIPE]",
            f'arguments=stage_args({s.name!r}, "{{{{ run_id }}}}")',
            f"container_resources=k8s.V1ResourceRequirements(requests={limits!r}, limits={limits!r})"]
    return f"    {s.ident} = KubernetesPodOperator({', '.join(opts)})"
