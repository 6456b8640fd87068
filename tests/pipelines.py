"""The embedded default pipeline (src/alignpipe/examples/rlhf.yaml), shrunk: the same graph with smaller data,
model and budgets, for tests that need a real RLHF run (end to end, kill -9 at random instants, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from alignpipe.api import builtin_path

# ~1 min on 2 cores: enough for RLHF to visibly work (tests/test_e2e.py)
SMALL = {
    "data": {"corpus": 2000, "demos": 600, "pref_prompts": 256, "rl_prompts": 128, "eval_prompts": 64},
    "base": {"n_layer": 2, "n_embd": 64, "n_head": 2, "steps": 250, "batch_size": 32, "lr": 0.003},
    "sft": {"epochs": 2},
    "pairs": {"max_new_tokens": 32},
    "reward": {"epochs": 2},
    "ppo": {"rollouts": 12, "max_new_tokens": 32},
    "evaluate": {"max_new_tokens": 32},
}

# ~15 s on 2 cores, checkpointing often: for tests of the machinery (resume, platforms, labeling), not of quality
TINY = {
    "data": {"corpus": 400, "demos": 120, "pref_prompts": 48, "rl_prompts": 32, "eval_prompts": 16},
    "base": {"n_layer": 1, "n_embd": 32, "n_head": 2, "steps": 60, "batch_size": 16, "max_len": 64,
             "checkpoint_every": 10},
    "sft": {"epochs": 1, "batch_size": 8, "checkpoint_every": 5},
    "pairs": {"max_new_tokens": 16, "checkpoint_every": 16},
    "labels": {"checkpoint_every": 20},
    "reward": {"epochs": 1, "batch_size": 16, "checkpoint_every": 3},
    "ppo": {"rollouts": 6, "batch_size": 8, "max_new_tokens": 16, "checkpoint_every": 1},
    "evaluate": {"max_new_tokens": 16},
}


# ~25 s on 2 cores, every stage as small as it goes: πSFT, Rφ and πRLHF as real model artifacts with lineage, for
# tests of what happens to them afterwards (versioning in git, MLflow, DVC)
MINI = {
    "data": {"corpus": 400, "demos": 96, "pref_prompts": 32, "rl_prompts": 32, "eval_prompts": 8},
    "base": {"n_layer": 1, "n_embd": 32, "n_head": 2, "steps": 20, "vocab_size": 300, "eval_fraction": 0.05},
    "sft": {"steps": 10},
    "pairs": {"n": 2, "max_new_tokens": 8},
    "reward": {"steps": 8},
    "ppo": {"rollouts": 4, "batch_size": 8, "max_new_tokens": 8, "checkpoint_every": 100},
    "evaluate": {"max_new_tokens": 8},
}


def rlhf_spec(workspace: str | Path, sizes: dict[str, dict[str, Any]] = SMALL, **top: Any) -> dict[str, Any]:
    """The default pipeline's spec with `sizes` merged into its stages' params, writing into `workspace`; `top`
    adds or replaces top-level fields (tracking, verify, ...)."""
    spec = yaml.safe_load(builtin_path("default").read_text())
    for stage, params in sizes.items():
        spec["stages"][stage]["params"] = {**spec["stages"][stage].get("params", {}), **params}
    return {**spec, "workspace": str(workspace), **top}
