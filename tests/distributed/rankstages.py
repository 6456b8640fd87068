"""Small multi-process user stages (`rankstages:NAME`, torch-free) that make the launcher observable: each rank
leaves a trace (its rank, pid, environment and when it ran) in params.trace."""

from __future__ import annotations

import json
import os
import time

from alignpipe import stage
from alignpipe.pipeline.errors import StageFailed


def _trace(ctx, **extra) -> None:
    env = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
                                         "OMP_NUM_THREADS")}
    with open(ctx.params.trace, "a") as f:
        f.write(json.dumps({"stage": ctx.stage, "rank": ctx.rank, "pid": os.getpid(), "env": env, **extra}) + "\n")


@stage(distributed=True)
def ranks(ctx):
    """Every rank traces itself and sleeps params.seconds; rank 0 writes the output."""
    start = time.time()
    time.sleep(ctx.params.seconds)
    _trace(ctx, start=start, end=time.time())
    if ctx.rank == 0:
        (ctx.output_dir() / "ranks.txt").write_text(os.environ.get("WORLD_SIZE", "1"))


@stage(distributed=True)
def one_fails(ctx):
    """Rank params.bad fails (params.how: 'crash' exits 1, 'bad_input' raises StageFailed); the others wait."""
    _trace(ctx)
    if ctx.rank == ctx.params.bad:
        time.sleep(0.5)  # the others are up and waiting by then
        if ctx.params.how == "bad_input":
            raise StageFailed("rank says: bad input")
        os._exit(1)
    time.sleep(600)


def single(ctx):
    """One process (not distributed): sleeps, traces."""
    start = time.time()
    time.sleep(ctx.params.seconds)
    _trace(ctx, start=start, end=time.time())
    (ctx.output_dir() / "x.txt").write_text("x")
