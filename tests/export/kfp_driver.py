"""Run inside the KFP side env: `python kfp_driver.py pipeline.yaml` parses the compiled YAML strictly into the
PipelineSpec proto (unknown fields are errors) and prints, as JSON, per task (by display name): its upstream
tasks, retry policy, caching flag and its executor's container resources."""

import json
import sys

import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

docs = list(yaml.safe_load_all(open(sys.argv[1])))
spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
names = {key: task.task_info.name for key, task in spec.root.dag.tasks.items()}
out = {}
for key, task in spec.root.dag.tasks.items():
    executor = spec.components[task.component_ref.name].executor_label
    res = spec.deployment_spec.fields["executors"].struct_value.fields[executor].struct_value.fields["container"]
    resources = json_format.MessageToDict(res.struct_value).get("resources", {})
    out[names[key]] = {
        "upstream": sorted(names[d] for d in task.dependent_tasks),
        "retry": json_format.MessageToDict(task.retry_policy),
        "cache": task.caching_options.enable_cache,
        "has_caching_options": task.HasField("caching_options"),
        "resources": resources,
    }
print(json.dumps({"pipeline": spec.pipeline_info.name, "tasks": out, "documents": len(docs)}))
