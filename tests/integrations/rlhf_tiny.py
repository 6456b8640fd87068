"""The built-in RLHF pipeline at its smallest (about 25 s on 2 cores): every stage runs, πSFT, Rφ and πRLHF are real
model artifacts with their lineage. The integration tests version its models in git, MLflow and DVC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from alignpipe.api import builtin_path

TINY = {
    "data": {"corpus": 400, "demos": 96, "pref_prompts": 32, "rl_prompts": 32, "eval_prompts": 8},
    "base": {"n_layer": 1, "n_embd": 32, "n_head": 2, "steps": 20, "vocab_size": 300,
             "eval_fraction": 0.05},
    "sft": {"steps": 10},
    "pairs": {"n": 2, "max_new_tokens": 8},
    "reward": {"steps": 8},
    "ppo": {"rollouts": 4, "batch_size": 8, "max_new_tokens": 8, "checkpoint_every": 100},
    "evaluate": {"max_new_tokens": 8},
}


def tiny_rlhf_spec(workspace: Path, **extra: Any) -> dict[str, Any]:
    """The built-in pipeline's spec with TINY params, in `workspace`; `extra` adds top-level fields."""
    spec = yaml.safe_load(builtin_path("default").read_text())
    for stage, params in TINY.items():
        spec["stages"][stage]["params"] = {**spec["stages"][stage].get("params", {}), **params}
    return {**spec, "workspace": str(workspace), **extra}
