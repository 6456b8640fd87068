"""Small user stages (`teststages:NAME`) that make the engine's behaviour observable from outside.

Each one leaves traces in files named by its params, so tests can tell whether code ran, when, how often,
and from which checkpoint it resumed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from alignpipe import stage
from alignpipe.pipeline.stagedef import StrictParams


def _trace(path: str, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")


def record(ctx):
    """Writes params.value; appends its stage name to params.marker every time it executes."""
    _trace(ctx.params.marker, ctx.stage)
    text = str(ctx.params.value)
    for name in sorted(ctx.inputs):
        text += "|" + ctx.inputs[name].id
    (ctx.output_dir() / "value.txt").write_text(text)
    ctx.annotate(value=ctx.params.value)


def sleepy(ctx):
    """Records its start and end time, sleeping in between."""
    start = time.time()
    time.sleep(ctx.params.seconds)
    (ctx.output_dir() / "span.json").write_text(json.dumps({"start": start, "end": time.time()}))


def flaky(ctx):
    """Fails until it has been attempted more than params.fail_times times."""
    n = int(Path(ctx.params.counter).read_text()) + 1 if Path(ctx.params.counter).exists() else 1
    Path(ctx.params.counter).write_text(str(n))
    if n <= ctx.params.fail_times:
        raise RuntimeError(f"planned failure {n}")
    (ctx.output_dir() / "ok.txt").write_text(f"succeeded on attempt {n}")


def hang(ctx):
    """Starts a grandchild, records both pids, and never returns."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(ctx.params.pids).write_text(json.dumps([os.getpid(), child.pid]))
    time.sleep(600)


def counter(ctx):
    """Counts to params.steps, one checkpoint per step, tracing every step it executes."""
    ckpt = ctx.checkpoints.latest()
    start = json.loads((ckpt.path / "state.json").read_text())["i"] if ckpt else 0
    Path(ctx.params.trace + ".pid").write_text(str(os.getpid()))
    _trace(ctx.params.trace, f"start {start}")
    for i in range(start, ctx.params.steps):
        time.sleep(ctx.params.step_s)
        _trace(ctx.params.trace, f"step {i}")
        ctx.checkpoints.save(i + 1, lambda d, i=i: (d / "state.json").write_text(json.dumps({"i": i + 1})))
        ctx.progress(i + 1, ctx.params.steps)
        ctx.log_metrics(i, loss=1.0 / (i + 1))
    (ctx.output_dir() / "count.txt").write_text(str(ctx.params.steps))


def die(ctx):
    """Leaves the process abruptly, as an OOM kill or a segfault would."""
    os._exit(int(ctx.params.code))


def bad_data(ctx):
    from alignpipe.pipeline.errors import StageFailed

    raise StageFailed("data.jsonl record 3: field 'prompt' is empty; remove the record or fill it")


class TypedParams(StrictParams):
    lr: float = 0.1
    steps: int = 3


@stage(params=TypedParams, inputs={"data": "dataset"}, outputs={"model": "model", "metrics": "metrics"},
       version="7")
def typed(ctx):
    (ctx.output_dir("model") / "w.txt").write_text(f"{ctx.params.lr} {ctx.params.steps}")
    (ctx.output_dir("metrics") / "m.json").write_text("{}")


def env_probe(ctx):
    """Records the placement environment the executor gave it, after a pause so siblings overlap."""
    time.sleep(ctx.params.seconds)
    keys = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    (ctx.output_dir() / "env.json").write_text(json.dumps({k: os.environ.get(k) for k in keys}))


def bulky(ctx):
    """Writes params.files files of params.mb MB each of seeded random bytes (slow to upload)."""
    import random

    rng = random.Random(ctx.params.seed)
    for i in range(ctx.params.files):
        (ctx.output_dir() / f"part-{i}.bin").write_bytes(rng.randbytes(int(ctx.params.mb * 2**20)))


def chatty(ctx):
    """Logs params.lines lines, params.step_s seconds apart (a stage whose log grows while it runs)."""
    for i in range(ctx.params.lines):
        ctx.log(f"line {i}")
        time.sleep(ctx.params.step_s)
    (ctx.output_dir() / "done.txt").write_text(str(ctx.params.lines))
