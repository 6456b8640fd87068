"""Learning-rate schedule: linear warmup from ~0 to the base lr, then linear decay to `final_fraction`·lr."""

from __future__ import annotations

import torch


def linear_lr_factor(step: int, total_steps: int, warmup_steps: int = 0, final_fraction: float = 0.0) -> float:
    """Multiplier of the base lr for optimizer step `step` (0-based).

    Warmup: (step + 1) / warmup_steps for step < warmup_steps (the first step already moves). Decay: linear
    from 1 at the end of warmup to `final_fraction` at `total_steps` (so the last step still has lr > 0).
    """
    if total_steps < 1 or warmup_steps < 0:
        raise ValueError(f"need total_steps ≥ 1 and warmup_steps ≥ 0, got {total_steps}, {warmup_steps}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    remaining = max(0.0, (total_steps - step) / decay_steps)
    return final_fraction + (1.0 - final_fraction) * min(1.0, remaining)


def linear_warmup_decay(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, final_fraction: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR following `linear_lr_factor`; call `.step()` once after each optimizer step.

    Its state_dict holds only counters (the lambda is a closure), so it checkpoints and restores exactly.
    """
    if warmup_steps > total_steps:
        raise ValueError(f"warmup_steps ({warmup_steps}) exceeds total_steps ({total_steps})")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: linear_lr_factor(step, total_steps, warmup_steps, final_fraction)
    )
