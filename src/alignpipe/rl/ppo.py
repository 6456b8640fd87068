"""Model-agnostic PPO core for RLHF: rewards + GAE from a rollout, then clipped PPO epochs (PPO.md C–F).

This module knows nothing about language models. The caller (the `ppo` stage) owns generation, the forward
passes and the optimizers; it hands over tensors and a `forward_fn`. The same code trains an LM policy with
a separate critic, or a tabular softmax policy in the bandit oracle test (tests/rl/test_ppo_core.py).

How to call it, once per rollout batch::

    from alignpipe.rl.kl import AdaptiveKLController          # or FixedKLController(0.05)
    from alignpipe.rl.ppo import PPOConfig, Rollout, compute_advantages, ppo_update
    from alignpipe.rl.rewards import eos_emitted, response_mask

    cfg = PPOConfig(minibatch_size=8)                       # embed it in the stage Params
    kl_ctl = AdaptiveKLController(init_beta=0.15, target=6.0, horizon=10000)
    generator = torch.Generator().manual_seed(seed)        # checkpoint generator.get_state() with the trainer

    # per rollout batch of B prompts:
    #   response_ids (B, T) = generated tokens right of the prompt, PAD after EOS (pad_id != eos_id).
    mask = response_mask(response_ids, eos_id, pad_id)                        # (B, T) bool
    with torch.no_grad():  # recompute with the *training* forward, logits / τ, position_ids from the mask
        logprobs_old, values_old = ...                                        # (B, T), (B, T)
        ref_logprobs = ...                                                    # (B, T) frozen reference, / τ
        scores = ...                                                          # (B,) normalized RM scores
    rollout = Rollout(logprobs_old=logprobs_old, values_old=values_old, ref_logprobs=ref_logprobs,
                      response_mask=mask, scores=scores,
                      eos_emitted=eos_emitted(response_ids, mask, eos_id))
    adv = compute_advantages(rollout, kl_ctl.beta, cfg)   # rewards, whitened advantages, returns, stats

    def forward_fn(idx):  # idx: (b,) long rows of the rollout; must use the same forward as logprobs_old
        ...  # policy forward on rows idx -> new_logprobs (b, T); critic -> new_values (b, T); entropy (b, T)
        return new_logprobs, new_values, entropy

    result = ppo_update(rollout, adv.advantages, adv.returns, forward_fn,
                        policy_optimizer, value_optimizer, cfg, generator)
    kl_ctl.update(adv.stats["kl"], n_steps=rollout.batch_size)  # KL_obs = batch mean of Σ_t k1_t (item 21)
    lr_scheduler.step()  # per rollout batch: linear decay to 0 over the planned number of rollouts
    log({**adv.stats, **result.summary()})

Notes for the caller:
- `critic="separate"` (default, item 19) needs a value optimizer over the critic's parameters, disjoint from
  the policy's; its loss is L_v (vf_coef unused). `critic="shared"` (value head on the policy) takes
  `value_optimizer=None` and minimizes L_pg + vf_coef·L_v with `policy_optimizer`.
- Optimizer: OpenAI 2019 / N+ used Adam with eps=1e-5 (torch.optim.Adam(params, lr, eps=1e-5)); PyTorch's
  Adam adds eps outside the bias-corrected sqrt(v̂), TensorFlow's inside, which differs only in the first steps.
- Determinism and resume: minibatch order comes only from `generator`; resume at rollout boundaries by
  restoring model, optimizers, scheduler, `kl_ctl.state_dict()` and `generator.get_state()`.
- Policy == reference at step 0 gives KL exactly 0 and, on the first minibatch, ratio ≡ 1 (tested here).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from alignpipe.rl.advantages import gae, masked_mean, masked_var, masked_whiten, zero_pads
from alignpipe.rl.config import PPOConfig
from alignpipe.rl.kl import kl_k1, kl_k2, kl_k3
from alignpipe.rl.losses import policy_loss, value_loss
from alignpipe.rl.rewards import apply_no_eos_penalty, end_index, per_token_rewards

ForwardFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
"""forward_fn(indices (b,) long) -> (new_logprobs (b, T), new_values (b, T), entropy (b, T)), with grad."""


class Replicated(Protocol):
    """Data-parallel replicas of the update (alignpipe.distributed.replicas): every replica holds the global rollout
    and draws the same minibatch order, runs forward_fn on the rows it `owns` only, then the gradients are summed
    over the replicas before clipping and the step, and each minibatch's statistics reduced."""

    def owned(self, indices: torch.Tensor) -> torch.Tensor: ...

    def sync_gradients(self, params: list[torch.Tensor]) -> None: ...

    def reduce_stats(self, stats: dict[str, float]) -> dict[str, float]: ...


class Partner(Protocol):
    """The other half of an update split between two processes (a critic on devices of its own,
    alignpipe.distributed.critic): one side holds the policy and its optimizer, the other the critic and its
    optimizer; both call ppo_update with the same rollout, targets and generator state, so they draw the same
    minibatch order. After each minibatch's backward the halves `exchange` their gradient norms and statistics;
    neither steps unless every norm is finite, so a NaN on one side stops both before any weight moves."""

    def exchange(self, norms: dict[str, float], stats: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
        ...


@dataclass(frozen=True)
class Rollout:
    """One rollout batch, recomputed with the training forward under no_grad (item 7).

    Values at positions outside `response_mask` are ignored (they may hold anything, even inf). The tensors
    are copied (detached) on construction.
    """

    logprobs_old: torch.Tensor
    """(B, T) log π_old of the sampled response tokens (logits / τ)."""
    values_old: torch.Tensor
    """(B, T) critic values V_t before emitting token t."""
    ref_logprobs: torch.Tensor
    """(B, T) log π_ref of the same tokens (logits / τ)."""
    response_mask: torch.Tensor
    """(B, T) bool, valid tokens: up to and including the first EOS (`rewards.response_mask`)."""
    scores: torch.Tensor
    """(B,) normalized reward-model scores S."""
    eos_emitted: torch.Tensor
    """(B,) bool, the response ended with EOS (`rewards.eos_emitted`); False triggers cfg.no_eos_penalty."""

    def __post_init__(self) -> None:
        shape = tuple(self.logprobs_old.shape)
        if len(shape) != 2:
            raise ValueError(f"Rollout.logprobs_old must be (B, T), got shape {shape}")
        for name in ("values_old", "ref_logprobs", "response_mask"):
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"Rollout.{name} has shape {tuple(getattr(self, name).shape)}, expected {shape}")
        for name in ("scores", "eos_emitted"):
            if tuple(getattr(self, name).shape) != shape[:1]:
                raise ValueError(f"Rollout.{name} has shape {tuple(getattr(self, name).shape)}, expected {shape[:1]}")
        # A snapshot: copies, so that a tensor that is a view of a parameter (say an expanded value head)
        # cannot change under the optimizer's in-place steps.
        for name in ("logprobs_old", "values_old", "ref_logprobs", "scores"):
            object.__setattr__(self, name, getattr(self, name).detach().clone())
        object.__setattr__(self, "response_mask", self.response_mask.detach().bool().clone())
        object.__setattr__(self, "eos_emitted", self.eos_emitted.detach().bool().clone())

    @property
    def batch_size(self) -> int:
        return self.logprobs_old.shape[0]


@dataclass(frozen=True)
class Advantages:
    rewards: torch.Tensor
    """(B, T) per-token rewards: −β·kl_t, plus the (penalized) score at T_end."""
    advantages: torch.Tensor
    """(B, T) GAE advantages, whitened over valid tokens if cfg.whiten_advantages; 0 on padding."""
    returns: torch.Tensor
    """(B, T) value targets A + V_old, from the unwhitened advantages."""
    kl: torch.Tensor
    """(B, T) the per-token KL estimate used in the reward (k1)."""
    stats: dict[str, float]
    """Rollout statistics; stats['kl'] (batch mean of Σ_t k1_t, nats) is KL_obs for the KL controller."""


def compute_advantages(rollout: Rollout, beta: float, cfg: PPOConfig) -> Advantages:
    """Rewards (items 10–12), GAE returns (item 15) and whitened advantages (item 16) of one rollout batch."""
    mask = rollout.response_mask  # (B, T)
    with torch.no_grad():
        kl = kl_k1(rollout.logprobs_old, rollout.ref_logprobs, mask)  # (B, T) the reward's estimator (item 12)
        kl1_sum = kl.sum(1)  # (B,) the controller's KL_obs
        scores = apply_no_eos_penalty(rollout.scores, rollout.eos_emitted, cfg.no_eos_penalty)  # (B,)
        rewards = per_token_rewards(scores, kl, mask, beta)  # (B, T)
        advantages, returns = gae(rewards, rollout.values_old, mask, cfg.gamma, cfg.lam)  # (B, T) each
        stats = {
            "kl": kl1_sum.mean().item(),
            "kl_k2": kl_k2(rollout.logprobs_old, rollout.ref_logprobs, mask).sum(1).mean().item(),  # diagnostics
            "kl_k3": kl_k3(rollout.logprobs_old, rollout.ref_logprobs, mask).sum(1).mean().item(),
            "beta": float(beta),
            "score": rollout.scores.float().mean().item(),
            "score_penalized": scores.float().mean().item(),
            "eos_rate": rollout.eos_emitted.float().mean().item(),
            "non_score_reward": (-beta * kl).sum(1).mean().item(),
            "reward_total": rewards.sum(1).mean().item(),
            "response_length": (end_index(mask) + 1).float().mean().item(),
            "advantage_mean": masked_mean(advantages, mask).item(),
            "advantage_std": masked_var(advantages, mask).sqrt().item(),
            "return_mean": masked_mean(returns, mask).item(),
            "value_mean": masked_mean(rollout.values_old, mask).item(),
        }
        if cfg.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
    return Advantages(rewards=rewards, advantages=advantages, returns=returns, kl=kl, stats=stats)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 − Var[R − V] / Var[R] over valid tokens (biased variances); NaN when Var[R] = 0.

    1: V predicts R perfectly; 0: no better than the mean; < 0: worse. values, returns, mask: (B, T).
    """
    with torch.no_grad():
        var_returns = masked_var(returns, mask)
        if var_returns.item() == 0.0:
            return float("nan")
        return (1.0 - masked_var(returns - values, mask) / var_returns).item()


@dataclass
class PPOUpdateResult:
    steps: list[dict[str, float]] = field(default_factory=list)
    """One record per optimizer step (epoch, minibatch, losses, clipfrac, approx_kl, ratio, grad norms)."""
    explained_variance: float = float("nan")
    """Of the rollout values for the returns, before the update."""

    def summary(self) -> dict[str, float]:
        """Means over optimizer steps (ratio_min/ratio_max: extremes), plus explained_variance."""
        keys = [k for k in self.steps[0] if k not in ("epoch", "minibatch")]
        out = {k: sum(s[k] for s in self.steps) / len(self.steps) for k in keys}
        out["ratio_min"] = min(s["ratio_min"] for s in self.steps)
        out["ratio_max"] = max(s["ratio_max"] for s in self.steps)
        out["explained_variance"] = self.explained_variance
        return out


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _check_setup(
    batch_size: int, cfg: PPOConfig, policy_optimizer: torch.optim.Optimizer | None, value_optimizer,
    partner: Partner | None = None,
) -> tuple[int, int]:
    minibatch = cfg.minibatch_size or batch_size
    micro = cfg.micro_batch_size or minibatch
    if batch_size % minibatch:
        raise ValueError(
            f"rollout batch size {batch_size} is not divisible by PPOConfig.minibatch_size={minibatch}; "
            "choose a minibatch_size that divides the rollout batch size"
        )
    if minibatch % micro:
        raise ValueError(
            f"PPOConfig.minibatch_size={minibatch} is not divisible by PPOConfig.micro_batch_size={micro}; "
            "choose a micro_batch_size that divides minibatch_size"
        )
    if cfg.critic == "shared" and value_optimizer is not None:
        raise ValueError(
            "PPOConfig.critic='shared' trains the value head with the policy optimizer; "
            "pass value_optimizer=None or set critic='separate'"
        )
    if partner is not None:
        if cfg.critic != "separate" or (policy_optimizer is None) == (value_optimizer is None):
            raise ValueError(
                "an update split with a partner needs PPOConfig.critic='separate' and exactly one optimizer here: "
                "the policy's (the partner trains the critic) or the value model's (the partner the policy)"
            )
    elif policy_optimizer is None:
        raise ValueError("ppo_update needs a policy_optimizer (or a partner that holds the policy)")
    elif cfg.critic == "separate":
        if value_optimizer is None:
            raise ValueError(
                "PPOConfig.critic='separate' needs a value_optimizer over the critic's parameters; "
                "pass one or set critic='shared'"
            )
        if {id(p) for p in _params(policy_optimizer)} & {id(p) for p in _params(value_optimizer)}:
            raise ValueError(
                "policy_optimizer and value_optimizer share parameters; with a value head on the "
                "policy set PPOConfig.critic='shared' and value_optimizer=None"
            )
    return minibatch, micro


def single_pass(cfg: PPOConfig, batch_size: int) -> bool:
    """One optimizer step per rollout batch: one epoch, one minibatch of the whole batch, no micro-batches.

    The update's forward then runs exactly the weights that sampled, before any step, so log π_old and V_old may
    be taken from it (detached) instead of a separate no-grad recompute of the same forward: ratio ≡ 1 exactly,
    and the rollout saves the policy's (and a separate critic's) recompute. TRL's RLOO/GRPO do the same when
    num_iterations is 1. With more steps per rollout the old values are needed for every row before the first
    step, so the recompute stays."""
    minibatch = cfg.minibatch_size or batch_size
    return cfg.ppo_epochs == 1 and minibatch == batch_size and (cfg.micro_batch_size or minibatch) == minibatch


def _check_forward(outputs: tuple[torch.Tensor | None, ...], shape: tuple[int, int], wanted: tuple[bool, ...]
                   ) -> None:
    for name, x, want in zip(("new_logprobs", "new_values", "entropy"), outputs, wanted, strict=True):
        if (x is None) == want:
            raise ValueError(f"forward_fn returned {'no' if want else 'a'} {name}; this half of the update "
                             f"{'needs' if want else 'does not compute'} it")
        if x is not None and tuple(x.shape) != shape:
            raise ValueError(f"forward_fn returned {name} of shape {tuple(x.shape)}, expected {shape}")


def _minibatch_step(  # noqa: PLR0913 — the rollout, its targets, the forward, its rows, config, peers
    rollout: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    forward_fn: ForwardFn,
    indices: torch.Tensor,
    micro: int,
    cfg: PPOConfig,
    replicas: Replicated | None = None,
    parts: tuple[bool, bool] = (True, True),
) -> dict[str, float]:
    """Forward/backward over one minibatch (in micro-batches); gradients accumulate, no optimizer step. With
    replicas, over the rows this replica owns, weighted by the whole minibatch's token count. `parts`: (policy
    loss, value loss) computed here; a half of a split update (Partner) computes one, and its forward_fn returns
    None for the other's outputs (logprobs and entropy, or values)."""
    mask = rollout.response_mask
    num_tokens = mask[indices.to(mask.device)].sum().item()
    policy, value = parts
    stats = {**(dict.fromkeys(("policy_loss", "entropy", "clipfrac", "approx_kl", "ratio_mean"), 0.0)
                | {"ratio_min": float("inf"), "ratio_max": float("-inf")} if policy else {}),
             **(dict.fromkeys(("value_loss", "value_clipfrac"), 0.0) if value else {})}

    def add(key: str, x: float) -> None:
        stats[key] += x

    mine = indices if replicas is None else replicas.owned(indices)
    for idx_cpu in mine.split(micro) if len(mine) else ():
        idx = idx_cpu.to(mask.device)
        new_logprobs, new_values, entropy = forward_fn(idx_cpu)  # (b, T) each, or None
        _check_forward((new_logprobs, new_values, entropy), (len(idx), mask.shape[1]), (policy, value, policy))
        m = mask[idx]  # (b, T)
        share = m.sum().item() / num_tokens  # this micro-batch's weight in the minibatch token mean
        loss = torch.zeros((), device=mask.device)
        if policy:
            pg = policy_loss(new_logprobs, rollout.logprobs_old[idx], advantages[idx], m, cfg.clip_eps, num_tokens)
            # Without a bonus the entropy is only logged: detach it so no backward runs through it.
            entropy = entropy if cfg.ent_coef > 0 else entropy.detach()
            ent = zero_pads(entropy, m).sum() / num_tokens
            loss = loss + pg.loss - cfg.ent_coef * ent
            add("policy_loss", pg.loss.item())
        if value:
            vf = value_loss(new_values, rollout.values_old[idx], returns[idx], m, cfg.value_clip_eps, num_tokens)
            loss = loss + (cfg.vf_coef if cfg.critic == "shared" else 1.0) * vf.loss
            add("value_loss", vf.loss.item())
        loss.backward()
        if policy:
            add("entropy", ent.item())
            for key, x in (("clipfrac", pg.clipfrac), ("approx_kl", pg.approx_kl), ("ratio_mean", pg.ratio_mean)):
                add(key, share * x.item())
            stats["ratio_min"] = min(stats["ratio_min"], pg.ratio_min.item())
            stats["ratio_max"] = max(stats["ratio_max"], pg.ratio_max.item())
        if value:
            add("value_clipfrac", share * vf.clipfrac.item())
    return stats if replicas is None else replicas.reduce_stats(stats)


class NonFiniteGradient(FloatingPointError):
    """A minibatch's gradient norm is NaN or inf: raised before the optimizer step, so the weights stay finite.
    `norms`: {"policy" or "value": the non-finite norm}."""

    def __init__(self, norms: dict[str, float]):
        self.norms = norms
        super().__init__(", ".join(f"{name} gradient norm is {norm}" for name, norm in norms.items()))


def _clip_and_step(optimizers: dict[str, torch.optim.Optimizer], max_grad_norm: float | None,
                   partner: Partner | None = None, stats: dict[str, float] | None = None) -> dict[str, float]:
    """Clip each optimizer's gradients; step them all only if every norm is finite (a partner's too: the halves
    exchange their norms and `stats` first). -> {"<name>_grad_norm": norm}, plus the partner's statistics."""
    norms = {name: torch.nn.utils.clip_grad_norm_(_params(opt), max_grad_norm or float("inf")).item()
             for name, opt in optimizers.items()}
    theirs: dict[str, float] = {}
    if partner is not None:
        their_norms, theirs = partner.exchange(norms, dict(stats or {}))
        norms = {**norms, **their_norms}
    bad = {name: norm for name, norm in norms.items() if not math.isfinite(norm)}
    if bad:
        raise NonFiniteGradient(bad)
    for opt in optimizers.values():
        opt.step()
    return {**theirs, **{f"{name}_grad_norm": norm for name, norm in norms.items()}}


def ppo_update(  # noqa: PLR0913 — the rollout, its targets, the forward, two optimizers, config, order, peers
    rollout: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    forward_fn: ForwardFn,
    policy_optimizer: torch.optim.Optimizer | None,
    value_optimizer: torch.optim.Optimizer | None,
    cfg: PPOConfig,
    generator: torch.Generator,
    replicas: Replicated | None = None,
    partner: Partner | None = None,
) -> PPOUpdateResult:
    """`cfg.ppo_epochs` epochs of shuffled minibatches over one rollout batch (items 17, 18, 20).

    advantages, returns: (B, T) from `compute_advantages`. forward_fn(indices) evaluates the *current*
    policy/critic on those rollout rows. Each epoch draws one permutation of the B rows from `generator`
    (a CPU torch.Generator), so the order is deterministic and resumable; every row is used once per epoch.
    Raises ValueError when the batch sizes do not divide or the optimizers do not match cfg.critic.
    `replicas`: the update is one of several data-parallel replicas' (Replicated); each minibatch's gradient is then
    the global minibatch's. `partner`: this is one half of an update split between processes (Partner): pass only
    this half's optimizer (policy_optimizer None on the critic's side, value_optimizer None on the policy's) and
    a generator in the same state on both sides; each step record then holds both halves' statistics.
    """
    batch_size = rollout.batch_size
    minibatch, micro = _check_setup(batch_size, cfg, policy_optimizer, value_optimizer, partner)
    parts = (policy_optimizer is not None, partner is None or value_optimizer is not None)
    advantages, returns = advantages.detach(), returns.detach()
    result = PPOUpdateResult(explained_variance=explained_variance(rollout.values_old, returns, rollout.response_mask))
    for epoch in range(cfg.ppo_epochs):
        order = torch.randperm(batch_size, generator=generator)  # (B,)
        for number, indices in enumerate(order.split(minibatch)):
            optimizers = {name: opt for name, opt in (("policy", policy_optimizer), ("value", value_optimizer))
                          if opt is not None}
            for opt in optimizers.values():
                opt.zero_grad(set_to_none=True)
            stats = _minibatch_step(rollout, advantages, returns, forward_fn, indices, micro, cfg, replicas, parts)
            if replicas is not None:
                replicas.sync_gradients([p for opt in optimizers.values() for p in _params(opt)])
            stats.update(_clip_and_step(optimizers, cfg.max_grad_norm, partner, stats))  # no NaN reaches a weight
            result.steps.append({"epoch": epoch, "minibatch": number, **stats})
    return result
