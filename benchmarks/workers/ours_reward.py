"""Worker: alignpipe's `reward` stage on explicit paths, timed from its own per-step metric events.

    python ours_reward.py SFT_DIR LABELS_DIR OUT_DIR --steps N --batch-size B --warmup W [--params JSON]

As ours_sft.py: the stage runs as `alignpipe stage run` would, with an events file; each optimizer step's
metrics event is stamped after the step and carries its pair count. Throughput = pairs of steps W+1..N /
(stamp N − stamp W): the loop body only (collation, forward of chosen and rejected rows, loss, backward,
clipping, AdamW, scheduler, logging); not start-up, loading, tokenization, calibration, eval or saving.
Prints one JSON line.
"""

from __future__ import annotations

import json

from _loop_args import parse_loop_args, timed_window
from _ours_stage import run_stage


def main() -> None:
    a = parse_loop_args(("--params", {"default": "{}"}))
    params = {"steps": a.steps, "batch_size": a.batch_size, "calibration_max": 64, **json.loads(a.params)}
    steps, total_s = run_stage("reward", {"model": a.model, "data": a.data}, params, a.out, "loss")
    stamps = [e["t"] for e in steps]
    seconds, pairs, n = timed_window(stamps, [e["values"].get("pairs", a.batch_size) for e in steps], a.warmup)
    _, tokens, _ = timed_window(stamps, [e["values"].get("tokens", 0) for e in steps], a.warmup)
    print(json.dumps({"pairs_per_s": pairs / seconds, "tokens_per_s": tokens / seconds, "seconds": seconds,
                      "steps": n, "pairs": pairs, "tokens": tokens, "process_stage_s": total_s,
                      "loss_first": steps[0]["values"]["loss"], "loss_last": steps[-1]["values"]["loss"]}))


if __name__ == "__main__":
    main()
