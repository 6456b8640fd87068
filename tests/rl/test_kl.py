import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alignpipe.rl.kl import AdaptiveKLController, FixedKLController, kl_k1, kl_k2, kl_k3, kl_per_token

P = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)  # π_θ, samples come from here
Q = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)  # π_ref


def exact_kl(p: torch.Tensor, q: torch.Tensor) -> float:
    return float((p * (p.log() - q.log())).sum())


# ---- estimators: literal values -------------------------------------------------------------------------------


def test_estimators_literal_values_and_masking():
    logprobs = torch.tensor([[-1.0, -2.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, float("-inf")]])  # the pad column holds -inf: must not leak
    mask = torch.tensor([[1, 1, 0]])
    # log ρ = ref − logp = [-0.5, 1.0]
    torch.testing.assert_close(kl_k1(logprobs, ref, mask), torch.tensor([[0.5, -1.0, 0.0]]))
    torch.testing.assert_close(kl_k2(logprobs, ref, mask), torch.tensor([[0.125, 0.5, 0.0]]))
    k3 = torch.tensor([[math.exp(-0.5) - 1 + 0.5, math.e - 1 - 1.0, 0.0]])
    torch.testing.assert_close(kl_k3(logprobs, ref, mask), k3)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_estimators_zero_when_policy_is_reference(estimator):
    logprobs = torch.tensor([[-0.3, -2.5, -1.0]])
    assert torch.equal(kl_per_token(logprobs, logprobs.clone(), torch.ones(1, 3), estimator), torch.zeros(1, 3))


def test_unknown_estimator_is_rejected():
    with pytest.raises(ValueError, match="k1"):
        kl_per_token(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), "k4")  # type: ignore[arg-type]


# ---- estimators: expectations under π_θ ---------------------------------------------------------------------------


def _expectation(estimator) -> float:
    logp, logq = P.log()[None], Q.log()[None]  # (1, V): every token as a "sample"
    return float((P * estimator(logp, logq, torch.ones_like(logp))[0]).sum())


def test_k1_and_k3_are_exactly_unbiased():
    assert _expectation(kl_k1) == pytest.approx(exact_kl(P, Q), abs=1e-12)
    assert _expectation(kl_k3) == pytest.approx(exact_kl(P, Q), abs=1e-12)


@pytest.mark.parametrize("estimator", [kl_k1, kl_k3], ids=["k1", "k3"])
def test_monte_carlo_mean_matches_kl_policy_to_reference(estimator):
    gen = torch.Generator().manual_seed(0)
    samples = torch.multinomial(P, 200_000, replacement=True, generator=gen)  # (N,) y ~ π_θ
    logp, logq = P.log()[samples][None], Q.log()[samples][None]  # (1, N)
    values = estimator(logp, logq, torch.ones_like(logp))[0]
    stderr = float(values.std()) / math.sqrt(values.numel())
    target, reverse = exact_kl(P, Q), exact_kl(Q, P)
    assert abs(float(values.mean()) - target) < 4 * stderr
    assert abs(float(values.mean()) - reverse) > 20 * stderr  # the direction is KL(π_θ ‖ π_ref), not reverse


def test_k2_monte_carlo_close_to_kl_for_nearby_distributions():
    p = torch.tensor([0.30, 0.25, 0.25, 0.20], dtype=torch.float64)
    q = torch.tensor([0.28, 0.27, 0.23, 0.22], dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    samples = torch.multinomial(p, 200_000, replacement=True, generator=gen)
    logp, logq = p.log()[samples][None], q.log()[samples][None]
    mc = float(kl_k2(logp, logq, torch.ones_like(logp)).mean())
    assert mc == pytest.approx(exact_kl(p, q), rel=0.05)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-20, 20), min_size=2, max_size=2))
def test_k2_k3_are_nonnegative(pair):
    logp, ref = torch.tensor([[pair[0]]], dtype=torch.float64), torch.tensor([[pair[1]]], dtype=torch.float64)
    mask = torch.ones(1, 1)
    assert float(kl_k2(logp, ref, mask)) >= 0
    assert float(kl_k3(logp, ref, mask)) >= 0


# ---- controllers (item 21) ----------------------------------------------------------------------------------------


def test_adaptive_kl_unchanged_at_target():
    ctl = AdaptiveKLController(init_beta=0.15, target=6.0, horizon=10000)
    ctl.update(6.0, n_steps=512)
    assert ctl.beta == 0.15


@pytest.mark.parametrize(
    ("kl_obs", "factor"),
    [(18.0, 1 + 0.2 * 512 / 10000), (0.0, 1 - 0.2 * 512 / 10000), (6.6, 1 + 0.1 * 512 / 10000)],
    ids=["3x-target-clipped-up", "zero-clipped-down", "proportional"],
)
def test_adaptive_kl_update(kl_obs, factor):
    ctl = AdaptiveKLController(init_beta=0.15, target=6.0, horizon=10000)
    ctl.update(kl_obs, n_steps=512)
    assert ctl.beta == pytest.approx(0.15 * factor, rel=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e6), st.integers(1, 49)), min_size=1, max_size=50))
def test_adaptive_kl_beta_stays_positive(updates):
    ctl = AdaptiveKLController(init_beta=0.15, target=6.0, horizon=10)
    for kl_obs, n in updates:
        ctl.update(kl_obs, n_steps=n)
        assert ctl.beta > 0


def test_adaptive_kl_rejects_updates_that_could_make_beta_nonpositive():
    ctl = AdaptiveKLController(init_beta=0.15, target=6.0, horizon=10)
    with pytest.raises(ValueError, match="increase the horizon"):
        ctl.update(0.0, n_steps=50)
    with pytest.raises(ValueError, match="non-finite"):
        ctl.update(float("nan"), n_steps=5)
    with pytest.raises(ValueError, match="init_beta"):
        AdaptiveKLController(init_beta=0.0, target=6.0, horizon=10)


def test_adaptive_kl_state_roundtrip_resumes_identically():
    ctl = AdaptiveKLController(init_beta=0.15, target=6.0, horizon=1000)
    for kl_obs in (1.0, 9.0, 30.0):
        ctl.update(kl_obs, n_steps=64)
    resumed = AdaptiveKLController(init_beta=0.15, target=6.0, horizon=1000)
    resumed.load_state_dict(ctl.state_dict())
    assert resumed.beta == ctl.beta != 0.15
    ctl.update(2.0, n_steps=64)
    resumed.update(2.0, n_steps=64)
    assert resumed.beta == ctl.beta


def test_fixed_kl_controller_never_moves():
    ctl = FixedKLController(0.05)
    ctl.update(100.0, n_steps=512)
    assert ctl.beta == 0.05
    restored = FixedKLController(1.0)
    restored.load_state_dict(ctl.state_dict())
    assert restored.beta == 0.05
