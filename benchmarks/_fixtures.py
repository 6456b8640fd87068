"""The models and data the training benchmarks share: the embedded default pipeline's own artifacts.

`rlhf_artifacts()` runs the built-in pipeline up to `reward` in a workspace under benchmarks/_runs/ (cached by
alignpipe itself: after the first call every stage is a cache hit) and returns the artifact directories, so
both alignpipe and the peer train the very πSFT base, πSFT and Rφ the default pipeline uses. The worker
processes (benchmarks/workers/*.py) get these paths on their command line.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from benchmarks.harness import ROOT, sh

WORKSPACE = ROOT / "_runs" / "rlhf-ws"
WORKERS = ROOT / "workers"
# Every training worker: 2 intra-op threads, OpenMP threads sleep instead of spinning between parallel regions.
THREADS = 2
WORKER_ENV = {"OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS), "OMP_WAIT_POLICY": "PASSIVE",
              "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
              "TRANSFORMERS_VERBOSITY": "error", "DISABLE_MLFLOW_INTEGRATION": "TRUE", "WANDB_DISABLED": "true",
              "PYTHONWARNINGS": "ignore"}
REFS = {"base": "base.model", "sft": "sft.model", "reward": "reward.model", "demos": "data.demos",
        "labels": "labels.out", "rl_prompts": "data.rl_prompts", "eval_prompts": "data.eval_prompts",
        "pairs": "pairs.out"}


def alignpipe_exe() -> list[str]:
    exe = Path(sys.executable).with_name("alignpipe")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "alignpipe"]


def rlhf_artifacts(until: str = "reward") -> dict[str, Path]:
    """name -> artifact directory (base, sft, reward models; demos, labels, pairs, rl/eval prompts)."""
    from alignpipe.api import Workspace

    WORKSPACE.parent.mkdir(parents=True, exist_ok=True)
    sh([*alignpipe_exe(), "run", "-w", str(WORKSPACE), "--until", until, "-q"],
       env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    ws = Workspace(WORKSPACE)
    try:
        out = {}
        for name, ref in REFS.items():
            try:
                out[name] = ws.show(ref).path
            except Exception:  # a stage past `until` has not run: absent from the map
                continue
        return out
    finally:
        ws.close()


def data_file(path: Path) -> Path:
    """The one .jsonl of a dataset artifact directory."""
    return next(p for p in sorted(path.iterdir()) if p.suffix == ".jsonl")


def worker_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, **WORKER_ENV, **(extra or {})}


