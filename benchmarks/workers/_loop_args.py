"""The command line every train-loop worker (ours and TRL's, in either venv) shares, and its thread setting."""

from __future__ import annotations

import argparse

import torch


def parse_loop_args(*extra: tuple[str, dict]) -> argparse.Namespace:
    """MODEL DATA OUT --steps N [--batch-size B] [--warmup W] [--threads T], plus `extra` (flag, kwargs)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    for flag, kwargs in extra:
        ap.add_argument(flag, **kwargs)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    return a
