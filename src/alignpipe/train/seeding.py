"""Seeds and RNG states: one stage seed, stable sub-seeds derived from it, exact capture and restore.

Bit-identical resume needs every random draw after a checkpoint to equal the uninterrupted run's. Two rules
make that easy: derive the seed of anything with its own identity (an epoch's data order, a generation batch)
from `(stage seed, names)` with `sub_seed`, so it does not depend on how much of the global stream was used
before; and checkpoint the global streams (python, numpy, torch) for whatever still draws from them.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch


def sub_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed derived from `seed` and `keys` (e.g. `sub_seed(seed, "epoch", 3)`), stable across runs,
    processes and Python versions (a sha256, not `hash()`)."""
    text = ":".join([str(int(seed)), *(str(k) for k in keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def seed_everything(seed: int) -> None:
    """Seed python's `random`, numpy's legacy global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds all CUDA devices


def capture_rng_state() -> dict[str, Any]:
    """The global RNG states: {"python", "numpy"} JSON-serializable, {"torch", "cuda"} tensors."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state` (CUDA states are restored only when CUDA is available)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
