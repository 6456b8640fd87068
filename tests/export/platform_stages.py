"""User stages (`platform_stages:NAME`) that inject failures into exported pipelines, and a multi-process one;
copied next to the spec."""

from __future__ import annotations

import os
from pathlib import Path

from alignpipe import stage


def flaky(ctx):
    """Fails on its first params.fail_times attempts (counted in the file params.counter), then succeeds."""
    counter = Path(ctx.params.counter)
    n = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(n))
    if n <= ctx.params.fail_times:
        raise RuntimeError(f"planned failure {n}")
    (ctx.output_dir() / "ok.txt").write_text("ok")


def blocked(ctx):
    """Fails while the file params.block exists (a failure the test injects and then lifts)."""
    if Path(ctx.params.block).exists():
        raise RuntimeError(f"blocked by {ctx.params.block}")
    (ctx.output_dir() / "ok.txt").write_text("ok " + ",".join(sorted(i.id for i in ctx.inputs.values())))


@stage(distributed=True)
def ranks(ctx):
    """Each of the task's ranks writes its rank; rank 0 publishes the world size the stage ran with."""
    Path(ctx.params.trace).with_name(f"rank-{ctx.rank}").write_text(os.environ.get("WORLD_SIZE", "1"))
    if ctx.rank == 0:
        (ctx.output_dir() / "world.txt").write_text(os.environ.get("WORLD_SIZE", "1"))
