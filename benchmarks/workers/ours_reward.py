"""Worker: alignpipe's `reward` stage on explicit paths, timed from its own per-step metric events.

    python ours_reward.py SFT_DIR PREFERENCES_FILE OUT_DIR --steps N --batch-size B --warmup W [--params JSON]

As ours_sft.py: the stage runs as `alignpipe stage run` would, with an events file; each optimizer step's
metrics event is stamped after the step and carries its pair count. Throughput = pairs of steps W+1..N /
(stamp N − stamp W): the loop body only (collation, forward of chosen and rejected rows, loss, backward,
clipping, AdamW, scheduler, logging); not start-up, loading, tokenization, calibration, eval or saving.
Prints one JSON line.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from _loop_args import parse_loop_args


def main() -> None:
    a = parse_loop_args(("--params", {"default": "{}"}))

    from alignpipe.pipeline.entry import execute, manual_task

    out = Path(a.out)
    events = out.with_name(out.name + ".events.jsonl")
    events.unlink(missing_ok=True)
    params = {"steps": a.steps, "batch_size": a.batch_size, "checkpoint_every": 10**6, "calibration_max": 64,
              **json.loads(a.params)}
    task = manual_task("reward", {"model": a.model, "data": a.data}, params, str(out), seed=0)
    task = task.model_copy(update={"events": str(events)})
    t0 = time.perf_counter()
    execute(task)
    total_s = time.perf_counter() - t0
    steps = sorted((e for e in map(json.loads, events.read_text().splitlines())
                    if e["type"] == "metrics" and "loss" in e["values"]), key=lambda e: e["step"])
    timed = steps[a.warmup:]
    seconds = timed[-1]["t"] - steps[a.warmup - 1]["t"]
    pairs = sum(e["values"].get("pairs", a.batch_size) for e in timed)
    tokens = sum(e["values"].get("tokens", 0) for e in timed)
    print(json.dumps({"pairs_per_s": pairs / seconds, "tokens_per_s": tokens / seconds, "seconds": seconds,
                      "steps": len(timed), "pairs": pairs, "tokens": tokens, "process_stage_s": total_s,
                      "loss_first": steps[0]["values"]["loss"], "loss_last": steps[-1]["values"]["loss"]}))


if __name__ == "__main__":
    main()
