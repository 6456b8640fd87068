"""The engine's promise: validating a pipeline and a no-op rerun never import torch."""

import json
import subprocess
import sys

PROBE = """
import json, sys
from alignpipe.pipeline.stagedef import resolve_stage
from alignpipe.stages import BUILTINS
for name in BUILTINS:
    resolve_stage(name).params.model_json_schema()  # import the module and its params model, as validation does
import alignpipe.cli, alignpipe.api  # the CLI's start-up path
print(json.dumps(sorted(m for m in ("torch", "transformers", "peft", "numpy") if m in sys.modules)))
"""


def test_stage_modules_and_cli_do_not_import_heavy_libraries():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []
