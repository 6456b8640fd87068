"""alignpipe's workers only (alignpipe's venv): run one stage as `alignpipe stage run` would, with an events file,
and return its per-step metric events (each stamped by the stage right after the step)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def run_stage(uses: str, inputs: dict[str, str], params: dict[str, Any], out: str, key: str,  # noqa: PLR0913
              resources: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], float]:
    """(the metrics events carrying `key`, sorted by step; the whole execute() in seconds). Checkpoints off.
    `resources` of several processes: this process launches their ranks (alignpipe.distributed.launch) and rank
    0 writes the events."""
    from alignpipe.pipeline.entry import execute, manual_task, run_task_file

    path = Path(out)
    events = path.with_name(path.name + ".events.jsonl")
    events.unlink(missing_ok=True)
    task = manual_task(uses, inputs, {"checkpoint_every": 10**6, **params}, out, seed=0)
    task = task.model_copy(update={"events": str(events), "resources": resources})
    t0 = time.perf_counter()
    if resources:
        task_file = path.with_name(path.name + ".task.json")
        task_file.write_text(task.model_dump_json())
        if run_task_file(str(task_file)):
            raise SystemExit(f"{uses} with {resources} failed")
    else:
        execute(task)
    total_s = time.perf_counter() - t0
    rows = [e for e in map(json.loads, events.read_text().splitlines())
            if e["type"] == "metrics" and key in e["values"]]
    return sorted(rows, key=lambda e: e["step"]), total_s
