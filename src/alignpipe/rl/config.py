"""PPO hyper-parameters (torch-free, so stage Params can build on them without importing torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

KLEstimator = Literal["k1", "k2", "k3"]


class PPOConfig(BaseModel):
    """PPO hyper-parameters. Defaults are the PPO.md reference settings."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    gamma: float = Field(1.0, ge=0.0, le=1.0)
    """Discount γ over response tokens (item 15)."""
    lam: float = Field(0.95, ge=0.0, le=1.0)
    """GAE λ (item 15)."""
    clip_eps: float = Field(0.2, gt=0.0)
    """Policy ratio clip ε (item 17)."""
    value_clip_eps: float = Field(0.2, gt=0.0)
    """Value clip ε_v around the rollout values (item 18); assumes unit-scale rewards."""
    vf_coef: float = Field(0.1, ge=0.0)
    """c_v in L_pg + c_v·L_v; used only with critic='shared' (a separate critic minimizes L_v alone)."""
    ent_coef: float = Field(0.0, ge=0.0)
    """Entropy bonus coefficient; off by default (item 19). Entropy is logged either way."""
    ppo_epochs: int = Field(4, ge=1)
    """Passes over each rollout batch; every sample is used once per epoch (item 20)."""
    minibatch_size: int | None = Field(None, ge=1)
    """Samples per optimizer step; must divide the rollout batch size. None: the whole rollout batch."""
    micro_batch_size: int | None = Field(None, ge=1)
    """Samples per forward_fn call (gradient accumulation); must divide minibatch_size. None: no split."""
    max_grad_norm: float | None = Field(None, gt=0.0)
    """Clip the global grad norm of each optimizer's parameters to this; None: no clipping (norm still logged)."""
    kl_estimator: Literal["k1"] = "k1"
    """KL estimator in the per-token reward (item 12): k1 only. k2 and k3 are logged as diagnostics (stats
    'kl_k2', 'kl_k3'): put in the reward, their expected gradient is not the gradient of KL(π‖π_ref), so PPO would
    optimise a different objective than the KL-regularized one (Schulman; Tang & Munos 2025)."""

    @field_validator("kl_estimator", mode="before")
    @classmethod
    def _k1_only(cls, value: object) -> object:
        if value in ("k2", "k3"):
            raise ValueError(f"{value} is a diagnostic only: as a per-token reward it optimises a different "
                             "objective than KL(π‖π_ref); use k1 (k2 and k3 are logged as kl_k2, kl_k3)")
        return value
    no_eos_penalty: float | None = -1.0
    """Score that replaces the RM score of a response without EOS (item 10); None keeps the RM score."""
    whiten_advantages: bool = True
    """Whiten advantages over the valid tokens of the rollout batch (item 16)."""
    critic: Literal["separate", "shared"] = "separate"
    """'separate': own value_optimizer, loss L_v. 'shared': value head on the policy, one optimizer."""
