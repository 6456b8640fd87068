"""PPO policy and value losses, reward-model loss and pairwise accuracy (PPO.md items 17, 18, 23, 24).

Reduction: PPO losses are a *token-level* mean over all valid tokens of the minibatch (every token weighs the
same, long responses weigh more), as in OpenAI 2019 and the N+ TL;DR reproduction; not a per-sequence mean.
When a minibatch is split into micro-batches for gradient accumulation, pass `num_tokens` = the number of
valid tokens of the whole minibatch: each micro-batch then returns its share of the minibatch mean and the
accumulated gradient equals the unsplit one.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from alignpipe.rl.advantages import masked_mean, zero_pads


class PolicyLoss(NamedTuple):
    loss: torch.Tensor
    """Scalar L_pg, differentiable."""
    clipfrac: torch.Tensor
    """Fraction of valid tokens where the clipped term won the max (their gradient is 0). Detached."""
    approx_kl: torch.Tensor
    """½·mean((log π_θ − log π_old)²) over valid tokens, an estimate of KL(π_old ‖ π_θ). Detached."""
    ratio_mean: torch.Tensor
    ratio_min: torch.Tensor
    ratio_max: torch.Tensor


class ValueLoss(NamedTuple):
    loss: torch.Tensor
    """Scalar L_v, differentiable."""
    clipfrac: torch.Tensor
    """Fraction of valid tokens where the clipped value error won the max. Detached."""


class PairwiseAccuracy(NamedTuple):
    accuracy: float
    """(wins + ½·ties) / N: a tie is worth half, so a collapsed constant RM scores 0.5, not 0 or 1."""
    ties: int
    """Number of pairs with r_chosen == r_rejected exactly; report it, many ties mean a collapsed RM."""


def _token_mean(x: torch.Tensor, mask: torch.Tensor, num_tokens: float | None) -> torch.Tensor:
    if num_tokens is None:
        return masked_mean(x, mask)
    return zero_pads(x, mask).sum() / num_tokens


MAX_LOG_RATIO = 20.0  # |log π_θ − log π_old| beyond this is a diverged update; e^20 keeps float32 finite


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    num_tokens: float | None = None,
) -> PolicyLoss:
    """Clipped surrogate L_pg = mean_valid max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)), ρ = exp(log π_θ − log π_old).

    logprobs (differentiable), old_logprobs, advantages, mask: (b, T).
    """
    valid = mask.bool()
    # clamped before exp: a runaway log-ratio gives a large finite ratio (clipped or not), never inf·0 = NaN
    log_ratio = zero_pads(logprobs - old_logprobs, valid).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)  # (b, T)
    ratio = torch.exp(log_ratio)  # (b, T)
    unclipped = -advantages * ratio  # (b, T)
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)  # (b, T)
    loss = _token_mean(torch.maximum(unclipped, clipped), mask, num_tokens)
    with torch.no_grad():
        ratio_valid = ratio[valid]
        return PolicyLoss(
            loss=loss,
            clipfrac=masked_mean((clipped > unclipped).to(ratio.dtype), mask),
            approx_kl=0.5 * masked_mean(log_ratio.square(), mask),
            ratio_mean=ratio_valid.mean(),
            ratio_min=ratio_valid.min(),
            ratio_max=ratio_valid.max(),
        )


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    num_tokens: float | None = None,
) -> ValueLoss:
    """L_v = ½·mean_valid max((V − R)², (V_clip − R)²), V_clip = V_old + clip(V − V_old, −ε_v, ε_v).

    values (differentiable), old_values (rollout values), returns (from `gae`), mask: (b, T).
    """
    valid = mask.bool()
    # Zero the pads first: a non-finite value there would make 0-weighted gradients NaN.
    values, old_values, returns = (zero_pads(x, valid) for x in (values, old_values, returns))
    values_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)  # (b, T)
    error = (values - returns).square()  # (b, T)
    error_clipped = (values_clipped - returns).square()  # (b, T)
    loss = 0.5 * _token_mean(torch.maximum(error, error_clipped), mask, num_tokens)
    with torch.no_grad():
        clipfrac = masked_mean((error_clipped > error).to(values.dtype), mask)
    return ValueLoss(loss=loss, clipfrac=clipfrac)


def reward_model_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: float | torch.Tensor = 0.0,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """Bradley-Terry loss mean(−logsigmoid(r_w − r_l − m) + η·(r_w + r_l)²).

    chosen, rejected: (N,) scores r_w, r_l; margin m: scalar or (N,); center_coef η ≥ 0 pulls scores
    towards 0 (it breaks the shift invariance of the plain loss). Returns a scalar.
    """
    if center_coef < 0:
        raise ValueError(f"center_coef must be >= 0, got {center_coef}")
    loss = -F.logsigmoid(chosen - rejected - margin)  # (N,)
    if center_coef:
        loss = loss + center_coef * (chosen + rejected).square()
    return loss.mean()


def pairwise_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> PairwiseAccuracy:
    """Held-out pairwise accuracy with ties counted as half.  chosen, rejected: (N,) scores."""
    if chosen.numel() == 0:
        raise ValueError("pairwise_accuracy needs at least one pair")
    wins = int((chosen > rejected).sum())
    ties = int((chosen == rejected).sum())
    return PairwiseAccuracy(accuracy=(wins + 0.5 * ties) / chosen.numel(), ties=ties)
