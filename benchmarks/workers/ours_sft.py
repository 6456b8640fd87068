"""Worker: alignpipe's `sft` stage on explicit paths, timed from its own per-step metric events.

    python ours_sft.py MODEL_DIR DEMOS_FILE OUT_DIR --steps N --batch-size B --warmup W [--params JSON]

The stage runs as `alignpipe stage run` would (alignpipe.pipeline.entry.execute of a manual task) with an events
file; every optimizer step writes a metrics event stamped after the step, carrying the step's non-pad tokens.
Throughput = tokens of steps W+1..N / (stamp of step N − stamp of step W): the loop body only (collation,
forward, backward, clipping, AdamW, scheduler, logging), not start-up, loading, tokenization, eval or saving.
Prints one JSON line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from _loop_args import parse_loop_args


def main() -> None:
    a = parse_loop_args(("--params", {"default": "{}"}))

    from alignpipe.models.build import count_parameters, load_causal_lm
    from alignpipe.pipeline.entry import execute, manual_task

    out = Path(a.out)
    events = out.with_name(out.name + ".events.jsonl")
    events.unlink(missing_ok=True)
    params = {"steps": a.steps, "batch_size": a.batch_size, "checkpoint_every": 10**6, **json.loads(a.params)}
    task = manual_task("sft", {"model": a.model, "data": a.data}, params, str(out), seed=0)
    task = task.model_copy(update={"events": str(events)})
    t0 = time.perf_counter()
    execute(task)
    total_s = time.perf_counter() - t0
    steps = [e for e in map(json.loads, events.read_text().splitlines()) if e["type"] == "metrics"
             and "tokens" in e["values"]]
    steps.sort(key=lambda e: e["step"])
    timed = steps[a.warmup:]
    seconds = timed[-1]["t"] - steps[a.warmup - 1]["t"]
    tokens = sum(e["values"]["tokens"] for e in timed)
    labels = sum(e["values"]["label_tokens"] for e in timed)
    print(json.dumps({"tokens_per_s": tokens / seconds, "label_tokens_per_s": labels / seconds, "seconds": seconds,
                      "steps": len(timed), "tokens": tokens, "label_tokens": labels, "process_stage_s": total_s,
                      "params": count_parameters(load_causal_lm(a.model)),
                      "loss_first": steps[0]["values"]["loss"], "loss_last": steps[-1]["values"]["loss"]}))


if __name__ == "__main__":
    main()
