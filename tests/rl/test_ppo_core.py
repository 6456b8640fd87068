"""The PPO core against oracles: step 0, lr = 0, the analytic bandit, plus the update loop's contracts."""

import copy
import dataclasses
import math
import queue
import threading

import pytest
import torch
from pydantic import ValidationError

from alignpipe.rl.advantages import gae, masked_mean, masked_var
from alignpipe.rl.kl import kl_k1, kl_k2, kl_k3
from alignpipe.rl.ppo import (
    NonFiniteGradient,
    PPOConfig,
    Rollout,
    compute_advantages,
    explained_variance,
    ppo_update,
)
from alignpipe.rl.rewards import eos_emitted, response_mask

EOS, PAD = 1, 0

# ---- a toy sequence policy: tabular logits per position, tabular critic --------------------------------------------


class ToySetup:
    """B responses of length ≤ T over a vocabulary V: policy logits (T, V) and critic values (T,)."""

    def __init__(self, seed: int, batch: int = 8, n_tokens: int = 5, vocab: int = 6, ref_equals_policy=False):
        gen = torch.Generator().manual_seed(seed)
        self.policy = torch.nn.Parameter(torch.randn(n_tokens, vocab, generator=gen))
        self.critic = torch.nn.Parameter(torch.randn(n_tokens, generator=gen))
        ids = torch.randint(1, vocab, (batch, n_tokens), generator=gen)  # no PAD sampled; EOS = 1 may occur
        ids[0] = torch.tensor([3, 4, EOS, 5, 2])[:n_tokens]  # at least one early EOS with tokens after it
        ids[1] = torch.tensor([3, 4, 5, 2, 3])[:n_tokens]  # at least one response without EOS
        mask = response_mask(ids, EOS, PAD)
        self.ids = torch.where(mask, ids, torch.full_like(ids, PAD))
        with torch.no_grad():
            logprobs, values, _ = self.forward(torch.arange(batch))
            ref_logits = self.policy if ref_equals_policy else torch.randn(n_tokens, vocab, generator=gen)
            ref = self._token_logprobs(ref_logits, torch.arange(batch))
        self.rollout = Rollout(
            logprobs_old=logprobs,
            values_old=values,
            ref_logprobs=ref,
            response_mask=mask,
            scores=torch.randn(batch, generator=gen),
            eos_emitted=eos_emitted(self.ids, mask, EOS),
        )

    def _token_logprobs(self, logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        logp = logits.log_softmax(-1)  # (T, V)
        ids = self.ids[idx]  # (b, T)
        return logp.expand(len(idx), -1, -1).gather(2, ids[..., None]).squeeze(2)  # (b, T)

    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logp = self.policy.log_softmax(-1)  # (T, V)
        entropy = -(logp.exp() * logp).sum(-1).expand(len(idx), -1)  # (b, T)
        return self._token_logprobs(self.policy, idx), self.critic.expand(len(idx), -1), entropy

    def params(self) -> list[torch.Tensor]:
        return [self.policy.detach().clone(), self.critic.detach().clone()]


def run_update(setup: ToySetup, cfg: PPOConfig, lr: float = 0.1, seed: int = 0, optimizer=torch.optim.Adam):
    adv = compute_advantages(setup.rollout, beta=0.1, cfg=cfg)
    popt = optimizer([setup.policy], lr=lr)
    vopt = optimizer([setup.critic], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    return ppo_update(setup.rollout, adv.advantages, adv.returns, setup.forward, popt, vopt, cfg, gen)


# ---- oracles: step 0 and lr = 0 ----------------------------------------------------------------------------------


def test_step0_policy_equals_reference():
    setup = ToySetup(seed=0, ref_equals_policy=True)
    cfg = PPOConfig(ppo_epochs=1)  # one minibatch = the whole rollout batch
    adv = compute_advantages(setup.rollout, beta=0.1, cfg=cfg)
    assert adv.stats["kl"] == 0.0
    assert adv.stats["kl"] == 0.0 and adv.stats["kl_k2"] == 0.0 and adv.stats["kl_k3"] == 0.0
    assert bool((adv.kl == 0).all())
    result = run_update(setup, cfg)
    first = result.steps[0]
    assert first["ratio_min"] == first["ratio_max"] == 1.0
    assert first["approx_kl"] == 0.0
    assert first["clipfrac"] == 0.0
    assert first["policy_loss"] == pytest.approx(0.0, abs=1e-6)  # −mean(whitened A) over the whole batch


def test_lr_zero_nothing_changes_through_all_epochs_and_minibatches():
    setup = ToySetup(seed=1)
    before = setup.params()
    cfg = PPOConfig(minibatch_size=4, micro_batch_size=2, max_grad_norm=1.0)
    result = run_update(setup, cfg, lr=0.0)
    assert len(result.steps) == 4 * 2
    for step in result.steps:
        assert abs(step["ratio_min"] - 1) <= 1e-6 and abs(step["ratio_max"] - 1) <= 1e-6
        assert step["clipfrac"] == 0.0
        assert step["approx_kl"] == 0.0
        assert step["policy_grad_norm"] > 0  # gradients flowed; only the step size was 0
    for b, a in zip(before, setup.params(), strict=True):
        assert torch.equal(a, b)


def test_lr_positive_moves_policy_and_ratio():
    setup = ToySetup(seed=1)
    before = setup.params()
    result = run_update(setup, PPOConfig(minibatch_size=4), lr=0.1)
    assert not torch.equal(setup.params()[0], before[0])
    assert not torch.equal(setup.params()[1], before[1])
    assert result.steps[-1]["approx_kl"] > 0
    summary = result.summary()
    assert summary["ratio_max"] > 1.0
    expected = {"policy_loss", "value_loss", "clipfrac", "approx_kl", "entropy", "explained_variance", "ratio_mean"}
    assert expected <= set(summary)


@pytest.mark.parametrize("ent_coef", [0.0, 0.1], ids=["off", "on"])
def test_entropy_bonus_is_the_only_policy_signal_when_advantages_are_zero(ent_coef):
    setup = ToySetup(seed=9, ref_equals_policy=True)
    ro = setup.rollout
    setup.rollout = dataclasses.replace(ro, scores=torch.zeros(8), values_old=torch.zeros_like(ro.values_old))
    entropy_before = setup.forward(torch.arange(1))[2].sum().item()
    before = setup.params()
    result = run_update(
        setup, PPOConfig(ent_coef=ent_coef, whiten_advantages=False, no_eos_penalty=None, minibatch_size=4)
    )
    entropy_after = setup.forward(torch.arange(1))[2].sum().item()
    assert result.steps[0]["entropy"] > 0  # logged either way
    if ent_coef == 0:
        assert torch.equal(setup.params()[0], before[0])
    else:
        assert entropy_after > entropy_before + 0.01


# ---- the update loop's contracts ---------------------------------------------------------------------------------


def _recording(setup: ToySetup, seen: list[list[int]]):
    def forward(idx):
        seen.append(idx.tolist())
        return setup.forward(idx)

    return forward


def _run_recorded(seed: int, generator_seed: int) -> tuple[list[list[int]], list[torch.Tensor]]:
    setup = ToySetup(seed=seed)
    cfg = PPOConfig(minibatch_size=4, micro_batch_size=2)
    adv = compute_advantages(setup.rollout, beta=0.1, cfg=cfg)
    seen: list[list[int]] = []
    popt, vopt = torch.optim.Adam([setup.policy], lr=0.1), torch.optim.Adam([setup.critic], lr=0.1)
    gen = torch.Generator().manual_seed(generator_seed)
    ppo_update(setup.rollout, adv.advantages, adv.returns, _recording(setup, seen), popt, vopt, cfg, gen)
    return seen, setup.params()


def test_every_sample_once_per_epoch_and_order_from_the_generator():
    seen, params = _run_recorded(seed=2, generator_seed=0)
    assert len(seen) == 4 * 4  # 4 epochs × 2 minibatches × 2 micro-batches
    epochs = [sum(seen[i : i + 4], []) for i in range(0, 16, 4)]
    for order in epochs:
        assert sorted(order) == list(range(8))
    assert len({tuple(order) for order in epochs}) > 1  # reshuffled each epoch
    seen_again, params_again = _run_recorded(seed=2, generator_seed=0)
    assert seen_again == seen
    for a, b in zip(params, params_again, strict=True):
        assert torch.equal(a, b)
    seen_other, _ = _run_recorded(seed=2, generator_seed=1)
    assert seen_other != seen


def test_resume_between_updates_is_bitwise_identical():
    cfg = PPOConfig(minibatch_size=2)

    def two_updates(interrupt: bool) -> list[torch.Tensor]:
        setup = ToySetup(seed=3)
        popt, vopt = torch.optim.Adam([setup.policy], lr=0.05), torch.optim.Adam([setup.critic], lr=0.05)
        gen = torch.Generator().manual_seed(7)
        adv = compute_advantages(setup.rollout, beta=0.1, cfg=cfg)
        ppo_update(setup.rollout, adv.advantages, adv.returns, setup.forward, popt, vopt, cfg, gen)
        if interrupt:  # checkpoint, then rebuild everything from the checkpoint
            state = {"params": setup.params(), "popt": popt.state_dict(), "vopt": vopt.state_dict()}
            state = copy.deepcopy({**state, "gen": gen.get_state()})
            setup = ToySetup(seed=3)
            with torch.no_grad():
                setup.policy.copy_(state["params"][0])
                setup.critic.copy_(state["params"][1])
            popt, vopt = torch.optim.Adam([setup.policy], lr=0.05), torch.optim.Adam([setup.critic], lr=0.05)
            popt.load_state_dict(state["popt"])
            vopt.load_state_dict(state["vopt"])
            gen = torch.Generator()
            gen.set_state(state["gen"])
        ppo_update(setup.rollout, adv.advantages, adv.returns, setup.forward, popt, vopt, cfg, gen)
        return setup.params()

    for a, b in zip(two_updates(False), two_updates(True), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (PPOConfig(minibatch_size=3), r"rollout batch size 8 is not divisible by PPOConfig.minibatch_size=3"),
        (PPOConfig(minibatch_size=4, micro_batch_size=3), r"minibatch_size=4 is not divisible by .*_size=3"),
    ],
    ids=["minibatch", "micro-batch"],
)
def test_batch_sizes_must_divide(cfg, match):
    with pytest.raises(ValueError, match=match):
        run_update(ToySetup(seed=0), cfg)


def test_critic_mode_must_match_the_optimizers():
    setup = ToySetup(seed=0)
    adv = compute_advantages(setup.rollout, 0.1, PPOConfig())
    gen = torch.Generator()
    args = (setup.rollout, adv.advantages, adv.returns, setup.forward)
    both = torch.optim.SGD([setup.policy, setup.critic], lr=0.1)
    with pytest.raises(ValueError, match="pass value_optimizer=None"):
        ppo_update(*args, both, torch.optim.SGD([setup.critic], lr=0.1), PPOConfig(critic="shared"), gen)
    with pytest.raises(ValueError, match="needs a value_optimizer"):
        ppo_update(*args, both, None, PPOConfig(), gen)
    with pytest.raises(ValueError, match="share parameters"):
        ppo_update(*args, both, torch.optim.SGD([setup.critic], lr=0.1), PPOConfig(), gen)


def test_forward_fn_output_shape_is_checked():
    setup = ToySetup(seed=0)
    adv = compute_advantages(setup.rollout, 0.1, PPOConfig())

    def bad_forward(idx):
        logprobs, values, entropy = setup.forward(idx)
        return logprobs, values[:, :-1], entropy

    popt, vopt = torch.optim.SGD([setup.policy], lr=0.1), torch.optim.SGD([setup.critic], lr=0.1)
    with pytest.raises(ValueError, match=r"new_values of shape \(8, 4\), expected \(8, 5\)"):
        ppo_update(setup.rollout, adv.advantages, adv.returns, bad_forward, popt, vopt, PPOConfig(), torch.Generator())


def test_rollout_shapes_are_checked():
    ones = torch.ones(2, 3)
    with pytest.raises(ValueError, match=r"Rollout.values_old has shape \(2, 2\), expected \(2, 3\)"):
        Rollout(ones, torch.ones(2, 2), ones, ones.bool(), torch.ones(2), torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"Rollout.scores has shape \(3,\), expected \(2,\)"):
        Rollout(ones, ones, ones, ones.bool(), torch.ones(3), torch.ones(2, dtype=torch.bool))


def test_micro_batches_give_the_same_update_as_whole_minibatches():
    results = []
    for micro in (None, 1, 2):
        setup = ToySetup(seed=4)
        run_update(setup, PPOConfig(minibatch_size=4, micro_batch_size=micro), lr=0.5, optimizer=torch.optim.SGD)
        results.append(setup.params())
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_shared_critic_minimizes_pg_plus_vf_coef_times_value_loss():
    cfg_sep, cfg_shared = PPOConfig(ppo_epochs=1), PPOConfig(ppo_epochs=1, critic="shared", vf_coef=0.1)
    separate = ToySetup(seed=5)
    start = separate.params()
    run_update(separate, cfg_sep, lr=1.0, optimizer=torch.optim.SGD)
    shared = ToySetup(seed=5)
    adv = compute_advantages(shared.rollout, 0.1, cfg_shared)
    popt = torch.optim.SGD([shared.policy, shared.critic], lr=1.0)
    ppo_update(shared.rollout, adv.advantages, adv.returns, shared.forward, popt, None, cfg_shared, torch.Generator())
    step_sep = [p - s for p, s in zip(separate.params(), start, strict=True)]
    step_shared = [p - s for p, s in zip(shared.params(), start, strict=True)]
    torch.testing.assert_close(step_shared[0], step_sep[0])  # the policy step is the same
    torch.testing.assert_close(step_shared[1], 0.1 * step_sep[1])  # the value step is scaled by c_v
    assert step_sep[1].abs().sum() > 0


def test_max_grad_norm_clips_each_step():
    setup = ToySetup(seed=6)
    start = setup.params()
    result = run_update(setup, PPOConfig(ppo_epochs=1, max_grad_norm=1e-3), lr=1.0, optimizer=torch.optim.SGD)
    assert result.steps[0]["policy_grad_norm"] > 1e-3  # logged before clipping
    assert (setup.params()[0] - start[0]).norm().item() == pytest.approx(1e-3, rel=1e-4)
    assert (setup.params()[1] - start[1]).norm().item() == pytest.approx(1e-3, rel=1e-4)


# ---- an update split in two halves (rl.ppo.Partner: the critic in a process of its own) -------------------------


class QueuePartner:
    """One half's end of a two-thread exchange (what distributed.groups.Link does between ranks)."""

    def __init__(self, outbox: queue.Queue, inbox: queue.Queue):
        self.outbox, self.inbox, self.calls = outbox, inbox, 0

    def exchange(self, norms, stats):
        self.calls += 1
        self.outbox.put((norms, stats))
        return self.inbox.get(timeout=30)


def split_update(setup: ToySetup, cfg: PPOConfig, policy_forward=None, value_forward=None, seed: int = 0):
    """The policy half here and the value half in a thread, each with its own optimizer and a generator in the same
    state: (each half's result or exception, the two partners, the two optimizers)."""
    adv = compute_advantages(setup.rollout, beta=0.1, cfg=cfg)
    popt, vopt = torch.optim.Adam([setup.policy], lr=0.1), torch.optim.Adam([setup.critic], lr=0.1)
    a, b = queue.Queue(), queue.Queue()
    policy_side, value_side = QueuePartner(a, b), QueuePartner(b, a)

    def policy_half(idx):
        logprobs, _, entropy = (policy_forward or setup.forward)(idx)
        return logprobs, None, entropy

    def value_half(idx):
        return None, (value_forward or setup.forward)(idx)[1], None

    out: dict = {}

    def half(name, forward, policy_opt, value_opt, partner):
        try:
            out[name] = ppo_update(setup.rollout, adv.advantages, adv.returns, forward, policy_opt, value_opt, cfg,
                                   torch.Generator().manual_seed(seed), partner=partner)
        except Exception as e:  # noqa: BLE001 — handed to the test
            out[name] = e

    thread = threading.Thread(target=half, args=("value", value_half, None, vopt, value_side))
    thread.start()
    half("policy", policy_half, popt, None, policy_side)
    thread.join(timeout=60)
    return out["policy"], out["value"], (policy_side, value_side), (popt, vopt)


@pytest.mark.parametrize("cfg", [PPOConfig(minibatch_size=4, ppo_epochs=2), PPOConfig(minibatch_size=4,
                                                                                        micro_batch_size=2)])
def test_an_update_split_in_two_halves_equals_the_joint_update(cfg):
    joint, split = ToySetup(seed=5), ToySetup(seed=5)
    expected = run_update(joint, cfg)
    policy, value, partners, _ = split_update(split, cfg)
    assert [torch.equal(x, y) for x, y in zip(split.params(), joint.params(), strict=True)] == [True, True]
    assert policy.steps == expected.steps  # every statistic of every step, both halves', bit for bit
    assert value.steps == expected.steps
    assert [p.calls for p in partners] == [len(expected.steps)] * 2  # one exchange per optimizer step
    assert policy.explained_variance == expected.explained_variance


def test_a_nan_in_one_half_stops_both_before_either_steps():
    setup = ToySetup(seed=3)
    cfg = PPOConfig(minibatch_size=4)
    calls = []

    def poisoned(idx):  # the value half's second minibatch is NaN
        logprobs, values, entropy = setup.forward(idx)
        calls.append(idx)
        return logprobs, values * (float("nan") if len(calls) == 2 else 1.0), entropy

    before = setup.params()
    policy, value, _, (popt, vopt) = split_update(setup, cfg, value_forward=poisoned)
    for e in (policy, value):  # each half saw the other's norm
        assert isinstance(e, NonFiniteGradient) and e.norms == {"value": e.norms["value"]}
        assert "value gradient norm is nan" in str(e)
    assert popt.state[setup.policy]["step"].item() == vopt.state[setup.critic]["step"].item() == 1
    after = setup.params()
    assert not torch.equal(after[0], before[0])  # the first minibatch stepped both
    assert torch.isfinite(after[0]).all() and torch.isfinite(after[1]).all()


def test_a_half_holds_exactly_one_optimizer_and_returns_only_its_outputs():
    setup = ToySetup(seed=1)
    cfg = PPOConfig(minibatch_size=4)
    adv = compute_advantages(setup.rollout, beta=0.1, cfg=cfg)
    popt, vopt = torch.optim.Adam([setup.policy], lr=0.1), torch.optim.Adam([setup.critic], lr=0.1)
    partner = QueuePartner(queue.Queue(), queue.Queue())
    with pytest.raises(ValueError, match="exactly one optimizer here"):
        ppo_update(setup.rollout, adv.advantages, adv.returns, setup.forward, popt, vopt, cfg, torch.Generator(),
                   partner=partner)
    with pytest.raises(ValueError, match="forward_fn returned a new_values; this half of the update does not"):
        ppo_update(setup.rollout, adv.advantages, adv.returns, setup.forward, popt, None, cfg, torch.Generator(),
                   partner=partner)
    with pytest.raises(ValueError, match="needs a policy_optimizer"):
        ppo_update(setup.rollout, adv.advantages, adv.returns, setup.forward, None, vopt, cfg, torch.Generator())
    assert partner.calls == 0


# ---- compute_advantages -------------------------------------------------------------------------------------------


def test_a_nan_gradient_stops_the_update_before_any_optimizer_steps():
    setup = ToySetup(seed=3)
    cfg = PPOConfig(minibatch_size=4)
    adv = compute_advantages(setup.rollout, beta=0.1, cfg=cfg)
    popt, vopt = torch.optim.Adam([setup.policy], lr=0.1), torch.optim.Adam([setup.critic], lr=0.1)
    calls = []

    def poisoned(idx):  # the second minibatch's value estimate is NaN: its value gradient is NaN, the policy's not
        logprobs, values, entropy = setup.forward(idx)
        calls.append(len(calls))
        return logprobs, values * (float("nan") if len(calls) == 2 else 1.0), entropy

    before = setup.params()
    with pytest.raises(NonFiniteGradient, match="value gradient norm is nan") as e:
        ppo_update(setup.rollout, adv.advantages, adv.returns, poisoned, popt, vopt, cfg, torch.Generator())
    assert list(e.value.norms) == ["value"] and len(calls) == 2
    after = setup.params()
    assert torch.isfinite(after[0]).all() and torch.isfinite(after[1]).all()
    assert not torch.equal(after[0], before[0])  # the first minibatch stepped ...
    popt_steps = popt.state[setup.policy]["step"].item()
    assert popt_steps == 1  # ... the second did not step the policy either, though its policy gradient was finite


def test_compute_advantages_returns_come_from_unwhitened_gae():
    setup = ToySetup(seed=7, batch=16)
    ro = setup.rollout
    adv = compute_advantages(ro, beta=0.2, cfg=PPOConfig(gamma=0.99, lam=0.9, no_eos_penalty=-1.0))
    raw_adv, raw_ret = gae(adv.rewards, ro.values_old, ro.response_mask, 0.99, 0.9)
    torch.testing.assert_close(adv.returns, raw_ret)
    torch.testing.assert_close(adv.returns - ro.values_old * ro.response_mask, raw_adv)
    assert masked_mean(adv.advantages, ro.response_mask).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_var(adv.advantages, ro.response_mask).item() == pytest.approx(1.0, abs=1e-5)
    assert bool((adv.advantages[~ro.response_mask] == 0).all())
    # the no-EOS row (row 1) carries the penalty instead of its score; Σ_t r_t = S' − β Σ_t kl_t
    penalized = torch.where(ro.eos_emitted, ro.scores, torch.tensor(-1.0))
    assert not bool(ro.eos_emitted[1])
    torch.testing.assert_close(adv.rewards.sum(1), penalized - 0.2 * adv.kl.sum(1))
    unwhitened = compute_advantages(ro, beta=0.2, cfg=PPOConfig(gamma=0.99, lam=0.9, whiten_advantages=False))
    torch.testing.assert_close(unwhitened.advantages, raw_adv)


def test_the_reward_uses_k1_and_k2_k3_are_diagnostics_only():
    ro = ToySetup(seed=8).rollout
    m = ro.response_mask
    k1 = kl_k1(ro.logprobs_old, ro.ref_logprobs, m)
    adv = compute_advantages(ro, beta=0.1, cfg=PPOConfig())
    torch.testing.assert_close(adv.kl, k1)
    assert adv.stats["kl"] == pytest.approx(k1.sum(1).mean().item())
    assert adv.stats["kl_k3"] == pytest.approx(kl_k3(ro.logprobs_old, ro.ref_logprobs, m).sum(1).mean().item())
    assert adv.stats["kl_k2"] == pytest.approx(kl_k2(ro.logprobs_old, ro.ref_logprobs, m).sum(1).mean().item())
    for estimator in ("k2", "k3"):
        with pytest.raises(ValidationError, match=f"{estimator} is a diagnostic only: as a per-token reward it "
                                                  "optimises a different objective"):
            PPOConfig(kl_estimator=estimator)


def test_explained_variance_literals():
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    returns = torch.tensor([[1.0, 2.0, 3.0, 4.0, 99.0]])
    assert explained_variance(returns, returns, mask) == 1.0
    assert explained_variance(torch.full((1, 5), 2.5), returns, mask) == 0.0
    # residual [1, 0, 0, −1]: Var 0.5 against Var[R] 1.25
    assert explained_variance(torch.tensor([[0.0, 2.0, 3.0, 5.0, 0.0]]), returns, mask) == pytest.approx(0.6)
    assert math.isnan(explained_variance(returns, torch.ones(1, 5), mask))


# ---- the analytic bandit oracle -----------------------------------------------------------------------------------

PI_REF = torch.tensor([0.35, 0.25, 0.15, 0.12, 0.08, 0.05])  # non-uniform reference over 6 one-token responses
N_COLUMNS = 3  # the response token sits in column 0 (= T_end); columns 1, 2 are padding holding garbage


def bandit_forward(logits: torch.Tensor, value: torch.Tensor, tokens: torch.Tensor):
    """forward_fn over rollout rows: the token's log-prob and the value in column 0, garbage in the pad columns."""

    def forward(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logp = logits.log_softmax(0)  # (V,)
        entropy = -(logp.exp() * logp).sum()
        pads = torch.ones(len(idx), N_COLUMNS - 1)  # (b, 2)
        new_logprobs = torch.cat([logp[tokens[idx]][:, None], -7.0 * pads], dim=1)  # (b, 3)
        values = torch.cat([value.expand(len(idx))[:, None], 3.0 * pads], dim=1)  # (b, 3)
        return new_logprobs, values, torch.cat([entropy.expand(len(idx))[:, None], 0 * pads], dim=1)

    return forward


def train_bandit(scores: torch.Tensor, beta: float, seed: int = 0, iterations: int = 100, batch: int = 128):
    """PPO on one prompt with one-token responses, through compute_advantages and ppo_update.

    Policy: a tabular softmax initialized to π_ref; critic: one scalar. Fixed β, Adam with linear LR decay.
    Returns (final policy, learned value, last rollout stats).
    """
    torch.manual_seed(seed)
    sampler, shuffler = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    logits = torch.nn.Parameter(PI_REF.log().clone())
    value = torch.nn.Parameter(torch.zeros(()))
    policy_opt = torch.optim.Adam([logits], lr=0.05, eps=1e-5)
    value_opt = torch.optim.Adam([value], lr=0.1, eps=1e-5)
    schedule = torch.optim.lr_scheduler.LambdaLR(policy_opt, lambda k: 1 - k / iterations)
    cfg = PPOConfig(minibatch_size=32)  # γ 1, λ 0.95, ε 0.2, 4 epochs, whitened advantages, k1 in the reward
    mask = torch.zeros(batch, N_COLUMNS, dtype=torch.bool)
    mask[:, 0] = True
    pads = torch.ones(batch, N_COLUMNS - 1)  # (B, 2)
    for _ in range(iterations):
        with torch.no_grad():
            tokens = torch.multinomial(logits.softmax(0), batch, replacement=True, generator=sampler)  # (B,)
        forward = bandit_forward(logits, value, tokens)
        with torch.no_grad():
            logprobs_old, values_old, _ = forward(torch.arange(batch))
        rollout = Rollout(
            logprobs_old=logprobs_old,
            values_old=values_old,
            ref_logprobs=torch.cat([PI_REF.log()[tokens][:, None], -2.0 * pads], dim=1),
            response_mask=mask,
            scores=scores[tokens],
            eos_emitted=torch.ones(batch, dtype=torch.bool),  # the single token ends the response
        )
        adv = compute_advantages(rollout, beta, cfg)
        ppo_update(rollout, adv.advantages, adv.returns, forward, policy_opt, value_opt, cfg, shuffler)
        schedule.step()
    return logits.detach().softmax(0), value.item(), adv.stats


def optimum(scores: torch.Tensor, beta: float) -> tuple[torch.Tensor, float]:
    """π* ∝ π_ref·exp(S/β) and the optimal objective β·log E_ref[exp(S/β)]."""
    unnormalized = PI_REF * torch.exp(scores / beta)
    return unnormalized / unnormalized.sum(), beta * math.log(unnormalized.sum().item())


def objective(pi: torch.Tensor, scores: torch.Tensor, beta: float) -> float:
    """E_π[S] − β·KL(π ‖ π_ref), exactly."""
    return ((pi * scores).sum() - beta * (pi * (pi.log() - PI_REF.log())).sum()).item()


@pytest.mark.parametrize("beta", [0.5, 0.25], ids=["beta0.5", "beta0.25"])
def test_bandit_converges_to_the_kl_regularized_optimum(beta):
    scores = torch.tensor([0.0, 0.3, -0.5, 1.0, 0.6, -1.0])
    pi_star, best = optimum(scores, beta)
    assert 0.5 * (PI_REF - pi_star).abs().sum() > 0.3  # the optimum is far from the start
    pi, value, stats = train_bandit(scores, beta)
    assert 0.5 * (pi - pi_star).abs().sum().item() <= 0.02
    assert objective(pi, scores, beta) == pytest.approx(best, abs=5e-4)
    # at π* every response earns S − β·log(π*/π_ref) = β·log Z: the rollout reward and the critic get there too
    assert stats["reward_total"] == pytest.approx(best, abs=5e-3)
    assert value == pytest.approx(best, abs=0.01)


def test_bandit_learns_to_emit_the_only_rewarded_token():
    scores = torch.zeros(6)
    scores[5] = 1.0  # the least likely token under π_ref
    pi, _, stats = train_bandit(scores, beta=0.02)
    assert pi[5].item() > 0.99
    assert stats["score"] > 0.95
