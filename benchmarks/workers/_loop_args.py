"""What every train-loop worker (ours and TRL's, in either venv: never imports alignpipe) shares: the command
line, the thread setting, and the timed window over per-step stamps."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import torch


def _parse(ap: argparse.ArgumentParser, extra: Sequence[tuple[str, dict]]) -> argparse.Namespace:
    for flag, kwargs in extra:
        ap.add_argument(flag, **kwargs)
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    return a


def parse_loop_args(*extra: tuple[str, dict]) -> argparse.Namespace:
    """MODEL DATA OUT --steps N [--batch-size B] [--warmup W ≥ 1], plus `extra` (flag, kwargs). Torch threads:
    OMP_NUM_THREADS, which the benchmark sets for both sides (benchmarks/_fixtures.py)."""
    ap = argparse.ArgumentParser()
    for name in ("model", "data", "out"):
        ap.add_argument(name)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=3)
    a = _parse(ap, extra)
    if not 1 <= a.warmup < a.steps:
        ap.error(f"--warmup {a.warmup}: need 1 ≤ warmup < --steps {a.steps} (the window starts at a step stamp)")
    return a


def parse_rl_args(*extra: tuple[str, dict], leading: Sequence[tuple[str, dict]] = ()) -> argparse.Namespace:
    """The RL workers' command line: [LEADING] MODEL RM PROMPTS OUT [--warmup 1] [--new-tokens 32], plus `extra`;
    torch threads as parse_loop_args."""
    ap = argparse.ArgumentParser()
    for name, kwargs in leading:
        ap.add_argument(name, **kwargs)
    for name in ("model", "rm", "prompts", "out"):
        ap.add_argument(name)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--new-tokens", type=int, default=32)
    return _parse(ap, extra)


def timed_window(stamps: Sequence[float], counts: Sequence[float], warmup: int) -> tuple[float, float, int]:
    """(seconds, units, steps) of steps warmup+1..N: stamp N − stamp warmup, and those steps' counts."""
    return stamps[-1] - stamps[warmup - 1], sum(counts[warmup:len(stamps)]), len(stamps) - warmup
