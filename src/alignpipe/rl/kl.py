"""Per-token KL estimators and KL coefficient controllers (PPO.md items 12 and 21).

All estimators take log-probabilities of the *sampled* tokens under the policy that sampled them (π_θ) and
under the frozen reference (π_ref), with log ρ = log π_ref − log π_θ. Averaged over samples y ~ π_θ they
estimate KL(π_θ ‖ π_ref) (Schulman, "Approximating KL Divergence"):

- k1 = −log ρ              unbiased, can be negative per token, high variance. Default in the reward.
- k2 = ½ (log ρ)²           biased (low bias when π_θ ≈ π_ref), ≥ 0, low variance.
- k3 = (ρ − 1) − log ρ      unbiased, ≥ 0, low variance.

Positions outside the response mask are exactly 0, even if the inputs hold inf/NaN there.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

from alignpipe.rl.advantages import zero_pads
from alignpipe.rl.config import KLEstimator  # one definition, torch-free


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """k1 = −log ρ = log π_θ − log π_ref.  All inputs (B, T); returns (B, T), 0 at masked positions."""
    log_ratio = ref_logprobs - logprobs  # (B, T) log ρ
    return zero_pads(-log_ratio, mask)


def kl_k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """k2 = ½ (log ρ)².  All inputs (B, T); returns (B, T), 0 at masked positions."""
    log_ratio = ref_logprobs - logprobs  # (B, T)
    return zero_pads(0.5 * log_ratio.square(), mask)


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """k3 = (ρ − 1) − log ρ, computed as expm1(log ρ) − log ρ for accuracy near ρ = 1.  (B, T) -> (B, T)."""
    log_ratio = ref_logprobs - logprobs  # (B, T)
    return zero_pads(torch.expm1(log_ratio) - log_ratio, mask)


_ESTIMATORS = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def kl_per_token(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, estimator: KLEstimator = "k1"
) -> torch.Tensor:
    """The chosen estimator per token.  logprobs, ref_logprobs, mask: (B, T); returns (B, T)."""
    if estimator not in _ESTIMATORS:
        raise ValueError(f"kl estimator must be one of {sorted(_ESTIMATORS)}, got {estimator!r}")
    return _ESTIMATORS[estimator](logprobs, ref_logprobs, mask)


class KLController(Protocol):
    """What the PPO loop needs from a KL coefficient: the current β, an update, and checkpointable state."""

    @property
    def beta(self) -> float: ...

    def update(self, kl_obs: float, n_steps: int) -> None: ...

    def state_dict(self) -> dict[str, float]: ...

    def load_state_dict(self, state: dict[str, float]) -> None: ...


class FixedKLController:
    """Constant β (N+ recipe: 0.05). `update` is a no-op so the loop can treat both controllers alike."""

    def __init__(self, beta: float) -> None:
        if not beta >= 0:
            raise ValueError(f"fixed KL beta must be >= 0, got {beta}")
        self._beta = float(beta)

    @property
    def beta(self) -> float:
        return self._beta

    def update(self, kl_obs: float, n_steps: int) -> None:
        """Nothing to adapt; β stays fixed."""

    def state_dict(self) -> dict[str, float]:
        return {"beta": self._beta}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self._beta = float(state["beta"])


class AdaptiveKLController:
    """Ziegler et al. 2019 proportional controller (PPO.md item 21).

    e = clip(KL_obs / KL_target − 1, −0.2, 0.2);  β ← β · (1 + e · n / horizon)

    KL_obs is the rollout-batch mean of Σ_t k1_t in nats, n the rollout batch size. OpenAI 2019 used
    β0 = 0.15, target 6 nats, horizon 10000. β is checkpoint state: save `state_dict()` with the trainer
    and restore it on resume, or the KL anchor silently resets to β0.
    """

    def __init__(self, init_beta: float, target: float, horizon: float) -> None:
        if not init_beta > 0:
            raise ValueError(f"adaptive KL init_beta must be > 0, got {init_beta}")
        if not target > 0:
            raise ValueError(f"adaptive KL target must be > 0 nats, got {target}")
        if not horizon > 0:
            raise ValueError(f"adaptive KL horizon must be > 0, got {horizon}")
        self._beta = float(init_beta)
        self.target = float(target)
        self.horizon = float(horizon)

    @property
    def beta(self) -> float:
        return self._beta

    def update(self, kl_obs: float, n_steps: int) -> None:
        # 1 + e·n/h >= 1 − 0.2·n/h, which is > 0 (so β stays > 0) exactly when n < 5·horizon.
        if not 0 < n_steps < 5 * self.horizon:
            raise ValueError(
                f"adaptive KL update needs 0 < n_steps < 5 * horizon ({5 * self.horizon:g}) so beta stays > 0, "
                f"got n_steps={n_steps}; increase the horizon"
            )
        if not math.isfinite(kl_obs):
            raise ValueError(f"adaptive KL update got a non-finite KL_obs={kl_obs}; check the rollout logprobs")
        error = min(max(kl_obs / self.target - 1.0, -0.2), 0.2)
        self._beta *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"beta": self._beta}

    def load_state_dict(self, state: dict[str, float]) -> None:
        beta = float(state["beta"])
        if not beta > 0:
            raise ValueError(f"adaptive KL state has beta={beta}; it must be > 0")
        self._beta = beta
