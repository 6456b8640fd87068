"""Stop on a non-finite loss or gradient before it reaches the weights, keeping the last good checkpoint."""

from __future__ import annotations

import math

import torch

from alignpipe.pipeline.context import Checkpoints
from alignpipe.pipeline.errors import StageFailed


def check_finite(
    value: torch.Tensor | float,
    *,
    step: int,
    what: str = "loss",
    checkpoints: Checkpoints | None = None,
    hint: str = "lower the learning rate (params.lr) or enable gradient clipping (params.max_grad_norm)",
) -> None:
    """Raise StageFailed if `value` (a scalar) is NaN or ±inf.

    Call it on the loss before `backward()` and on the gradient norm before `optimizer.step()`, so a bad step
    never changes the weights. The message names the step and the newest complete checkpoint, which the
    engine keeps (a failed stage's work dir is not cleared): a rerun with the same params resumes from it and
    hits the same step again (training is deterministic), so the fix is a change of params.
    """
    v = float(value.detach().float().item() if isinstance(value, torch.Tensor) else value)
    if not math.isfinite(v):
        raise non_finite(what, v, step=step, checkpoints=checkpoints, hint=hint)


def non_finite(what: str, value: float, *, step: int, checkpoints: Checkpoints | None, hint: str) -> StageFailed:
    """The StageFailed check_finite raises: names the value, the step and the checkpoint that is kept."""
    last = checkpoints.latest() if checkpoints is not None else None
    kept = (f"the last good checkpoint (step {last.step}) is kept in {last.path}" if last
            else "no checkpoint had been written yet")
    return StageFailed(f"{what} is {'NaN' if math.isnan(value) else 'inf'} at step {step}; stopped before the "
                       f"optimizer applied it, {kept}. Fix: {hint}")
