"""End to end: wall time of the embedded default pipeline (`alignpipe run`), in all and per stage.

Each repeat runs `alignpipe run -w <fresh workspace> -q` as a subprocess (no cache: a new workspace every
time), each stage process choosing its OpenMP wait policy from the machine's load, the stages' own
`resources: {cpus: 2}`; the per-stage durations come from the journal (`alignpipe status --json`). No peer:
the target is ≤ 5 minutes on 2 cores. Runs take minutes, so `python -m benchmarks end_to_end --repeats 2` is
the intended invocation (the harness's floor of 5 repeats otherwise).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics

from benchmarks import _fixtures as fx
from benchmarks.harness import Bench, Metric, benchmark, sh

TARGET_S = 300.0


@benchmark("end_to_end", title="End to end: the default pipeline", order=40)
def run(b: Bench) -> None:
    env = fx.stage_env()  # each stage process picks its OpenMP wait policy (alignpipe.pipeline.cpu)
    stages: list[dict[str, float]] = []
    counter = [0]

    def once() -> None:
        counter[0] += 1
        ws = b.workdir / f"ws-{counter[0]}"
        shutil.rmtree(ws, ignore_errors=True)
        sh([*fx.alignpipe_exe(), "run", "-w", str(ws), "-q"], env=env)
        status = json.loads(sh([*fx.alignpipe_exe(), "status", "-w", str(ws), "--json"], env=env).stdout)
        stages.append({name: s["duration"] for name, s in status["stages"].items()})
        shutil.rmtree(ws, ignore_errors=True)

    (samples,) = b.interleave([once], repeats=b.repeats, warmup=0, max_redo=1)
    b.config(pipeline="built-in default (src/alignpipe/examples/rlhf.yaml)", cores=os.cpu_count(),
             OpenMP_wait_policy="each stage process's own choice (alignpipe.pipeline.cpu)", target_s=TARGET_S)
    whole = b.series("alignpipe", samples)
    verdict = "met ✅" if whole["median"] <= TARGET_S else "**missed** ❌"
    b.add_row("alignpipe run (whole pipeline)", Metric("s", "lower"), whole,
              note=f"target ≤ {TARGET_S:.0f} s: {verdict}")
    used = [st for st, s in zip(stages, samples, strict=True) if s.used] or stages
    for name in used[0]:
        vals = [st[name] for st in used if name in st]
        b.add_row(f"stage {name}", Metric("s", "lower"), {
            **b.series("alignpipe", [s for s in samples if s.used] or samples),
            "median": statistics.median(vals), "min": min(vals), "max": max(vals), "values": vals, "n": len(vals)})
    b.extra["stages"] = stages
