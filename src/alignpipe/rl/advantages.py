"""Masked statistics, advantage whitening and GAE (PPO.md items 15 and 16).

Masks are (B, T), 1 on valid response tokens (a prefix of each row, see `rewards.response_mask`).
Padded positions never enter a statistic and come out as exactly 0.
"""

from __future__ import annotations

import torch


def zero_pads(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x with every position outside the mask exactly 0: where, not multiply, since pads may hold inf/NaN
    and 0 * inf = NaN. The one masking helper of rl/."""
    return torch.where(mask.bool(), x, torch.zeros_like(x))


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over valid positions (all of them, or along `dim`).  x, mask: (B, T)."""
    total = zero_pads(x, mask)
    count = mask.to(x.dtype)
    if dim is None:
        return total.sum() / count.sum()
    return total.sum(dim) / count.sum(dim)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Biased (population) variance of x over all valid positions.  x, mask: (B, T); returns a scalar."""
    mean = masked_mean(x, mask)
    return masked_mean((x - mean).square(), mask)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean) / sqrt(var + eps) over valid positions, biased variance, pads set to 0.  (B, T) -> (B, T)."""
    mean = masked_mean(x, mask)
    var = masked_var(x, mask)
    return zero_pads((x - mean) * torch.rsqrt(var + eps), mask)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over the response tokens.

    δ_t = r_t + γ·V_{t+1} − V_t,  A_t = δ_t + γλ·A_{t+1},  with V and r taken as 0 after T_end (outside the
    mask), so the bootstrap after the last token is 0. Returns R_t = A_t + V_t are built here, from the
    rollout values and *before* any whitening of A.

    rewards, values, mask: (B, T). Returns (advantages (B, T), returns (B, T)), both 0 on padding.
    Vectorized over the batch, a reverse loop over T.
    """
    rewards = zero_pads(rewards, mask)  # (B, T)
    values = zero_pads(values, mask)  # (B, T)
    n_tokens = rewards.shape[1]
    advantages = torch.zeros_like(rewards)  # (B, T)
    next_value = torch.zeros_like(rewards[:, 0])  # (B,)
    next_advantage = torch.zeros_like(rewards[:, 0])  # (B,)
    for t in reversed(range(n_tokens)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,)
        next_advantage = delta + gamma * lam * next_advantage  # (B,)
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    advantages = zero_pads(advantages, mask)
    returns = zero_pads(advantages + values, mask)
    return advantages, returns
