"""Worker: alignpipe's `sft` stage on explicit paths, timed from its own per-step metric events.

    python ours_sft.py MODEL_DIR DEMOS_FILE OUT_DIR --steps N --batch-size B --warmup W [--params JSON]
        [--resources JSON]   # e.g. {"procs_per_node": 2, "cpus": 1}: data parallel, this process the launcher

The stage runs as `alignpipe stage run` would (alignpipe.pipeline.entry.execute of a manual task) with an events
file; every optimizer step writes a metrics event stamped after the step, carrying the step's non-pad tokens.
Throughput = tokens of steps W+1..N / (stamp of step N − stamp of step W): the loop body only (collation,
forward, backward, clipping, AdamW, scheduler, logging), not start-up, loading, tokenization, eval or saving.
Prints one JSON line.
"""

from __future__ import annotations

import json

from _loop_args import parse_loop_args, timed_window
from _ours_stage import run_stage


def main() -> None:
    a = parse_loop_args(("--params", {"default": "{}"}), ("--resources", {"default": "{}"}))

    from alignpipe.models.build import count_parameters, load_causal_lm

    steps, total_s = run_stage("sft", {"model": a.model, "data": a.data},
                               {"steps": a.steps, "batch_size": a.batch_size, **json.loads(a.params)}, a.out, "tokens",
                               json.loads(a.resources) or None)
    stamps = [e["t"] for e in steps]
    seconds, tokens, n = timed_window(stamps, [e["values"]["tokens"] for e in steps], a.warmup)
    _, labels, _ = timed_window(stamps, [e["values"]["label_tokens"] for e in steps], a.warmup)
    print(json.dumps({"tokens_per_s": tokens / seconds, "label_tokens_per_s": labels / seconds, "seconds": seconds,
                      "steps": n, "tokens": tokens, "label_tokens": labels, "process_stage_s": total_s,
                      "params": count_parameters(load_causal_lm(a.model)),
                      "loss_first": steps[0]["values"]["loss"], "loss_last": steps[-1]["values"]["loss"]}))


if __name__ == "__main__":
    main()
