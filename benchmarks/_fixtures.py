"""The models and data the training benchmarks share: the embedded default pipeline's own artifacts.

`rlhf_artifacts()` runs the built-in pipeline up to `reward` in a workspace under benchmarks/_runs/ (cached by
alignpipe itself: after the first call every stage is a cache hit) and returns the artifact directories, so
both alignpipe and the peer train the very πSFT base, πSFT and Rφ the default pipeline uses. The worker
processes (benchmarks/workers/*.py) get these paths on their command line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from alignpipe.pipeline.cpu import POLICY_VARS, SPIN_COUNT
from benchmarks.harness import ROOT, run_json, sh

WORKSPACE = ROOT / "_runs" / "rlhf-ws"
WORKERS = ROOT / "workers"
# Every training worker, ours and the peer's alike: 2 intra-op threads and one OpenMP wait policy (WAIT_POLICIES).
THREADS = 2
WAIT_POLICIES = {"spin": {"GOMP_SPINCOUNT": SPIN_COUNT},  # what a stage process picks on a quiet machine
                 "passive": {"OMP_WAIT_POLICY": "PASSIVE"}}  # ... and on a busy one (alignpipe.pipeline.cpu)
WORKER_ENV = {"OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS),
              "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
              "TRANSFORMERS_VERBOSITY": "error", "DISABLE_MLFLOW_INTEGRATION": "TRUE", "WANDB_DISABLED": "true",
              "PYTHONWARNINGS": "ignore"}
REFS = {"base": "base.model", "sft": "sft.model", "reward": "reward.model", "demos": "data.demos",
        "labels": "labels.out", "rl_prompts": "data.rl_prompts", "eval_prompts": "data.eval_prompts",
        "pairs": "pairs.out"}


def alignpipe_exe() -> list[str]:
    """The installed console script next to this interpreter (not a pyenv shim, which adds its own ~60 ms)."""
    exe = Path(sys.executable).with_name("alignpipe")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "alignpipe"]


def rlhf_artifacts(until: str = "reward") -> dict[str, Path]:
    """name -> artifact directory (base, sft, reward models; demos, labels, pairs, rl/eval prompts)."""
    from alignpipe.api import Workspace

    WORKSPACE.parent.mkdir(parents=True, exist_ok=True)
    sh([*alignpipe_exe(), "run", "-w", str(WORKSPACE), "--until", until, "-q"],
       env=stage_env())
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


def copy_data_file(artifact: Path, out: Path) -> None:
    """A dataset artifact's one .jsonl as a plain file (for a peer that reads files, not artifacts)."""
    out.write_text(data_file(artifact).read_text())


def stage_env() -> dict[str, str]:
    """os.environ without an OpenMP wait policy: `alignpipe run`'s stage processes choose their own."""
    return {k: v for k, v in os.environ.items() if k not in POLICY_VARS}


def worker_env(extra: dict[str, str] | None = None, policy: str = "spin") -> dict[str, str]:
    return {**stage_env(), **WORKER_ENV, **WAIT_POLICIES[policy], **(extra or {})}




def worker(info: dict[str, list[dict]], key: str, cmd: Sequence[str], metric: str,
           policy: str = "spin") -> Callable[[], float]:
    """A harness sample: run a worker printing one JSON line under `policy`, keep its record in info[key],
    return its `metric`."""
    def sample() -> float:
        r = run_json(cmd, env=worker_env(policy=policy))
        r.pop("logs", None)
        info.setdefault(key, []).append(r)
        return r[metric]
    return sample
