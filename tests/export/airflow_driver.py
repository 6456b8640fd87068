"""Run inside the Airflow side env: `python airflow_driver.py DAGS_DIR` imports the folder with DagBag and prints,
as JSON, its import errors and each task's operator, upstream ids, retries, backoff, timeout, pool slots and
resources (or pod image and container resources), then (with --test) runs the DAG once with dag.test()."""

import json
import sys

from airflow.dag_processing.dagbag import DagBag


def describe(task):
    out = {"operator": type(task).__name__, "upstream": sorted(task.upstream_task_ids), "retries": task.retries,
           "retry_delay_s": task.retry_delay.total_seconds(), "backoff": task.retry_exponential_backoff,
           "timeout_s": task.execution_timeout.total_seconds() if task.execution_timeout else None,
           "pool_slots": task.pool_slots}
    if out["operator"] == "KubernetesPodOperator":
        res = task.container_resources
        out.update(image=task.image, cmds=task.cmds, arguments=task.arguments, limits=res.limits)
    else:
        res = task.resources.to_dict() if task.resources else {}
        out.update(bash_command=task.bash_command, resources={k: v["qty"] for k, v in res.items()})
    return out


bag = DagBag(dag_folder=sys.argv[1])
dags = {dag_id: {t.task_id: describe(t) for t in dag.tasks} for dag_id, dag in bag.dags.items()}
print(json.dumps({"import_errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": dags}))
if "--test" in sys.argv:
    (dag,) = bag.dags.values()
    run = dag.test()
    print(json.dumps({"state": str(getattr(run.state, "value", run.state))}))
