"""PPO/RLHF math as pure tensor functions (shared/PPO.md), imported by stages at run time only.

- `kl`: per-token KL estimators k1/k2/k3, fixed and adaptive KL controllers.
- `rewards`: response masks, T_end, the no-EOS policy, per-token rewards.
- `advantages`: masked mean/variance/whitening, GAE.
- `losses`: clipped policy and value losses, reward-model loss, pairwise accuracy.
- `ppo`: `PPOConfig`, `Rollout`, `compute_advantages`, `ppo_update` (model-agnostic; see its docstring).
"""
