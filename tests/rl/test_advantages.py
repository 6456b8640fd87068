import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alignpipe.rl.advantages import gae, masked_mean, masked_var, masked_whiten


def naive_gae(rewards, values, lengths, gamma, lam):
    """Reference GAE on python floats, one sequence at a time: V after T_end is 0."""
    batch, n_tokens = len(rewards), len(rewards[0])
    adv = [[0.0] * n_tokens for _ in range(batch)]
    ret = [[0.0] * n_tokens for _ in range(batch)]
    for i in range(batch):
        running = 0.0
        for t in reversed(range(lengths[i])):
            next_value = values[i][t + 1] if t + 1 < lengths[i] else 0.0
            delta = rewards[i][t] + gamma * next_value - values[i][t]
            running = delta + gamma * lam * running
            adv[i][t] = running
            ret[i][t] = running + values[i][t]
    return torch.tensor(adv, dtype=torch.float64), torch.tensor(ret, dtype=torch.float64)


def prefix_mask(lengths, n_tokens):
    return torch.arange(n_tokens)[None, :] < torch.tensor(lengths)[:, None]


def test_masked_mean_and_biased_variance_literal():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, float("nan"), float("inf")]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(x, mask).item() == pytest.approx(2.0)
    assert masked_var(x, mask).item() == pytest.approx(2.0 / 3.0)  # biased: divide by 3, not 2
    torch.testing.assert_close(masked_mean(x, mask, dim=1), torch.tensor([1.5, 3.0]))


def test_whiten_literal_and_pads_zeroed():
    x = torch.tensor([[1.0, 3.0, 50.0]])
    mask = torch.tensor([[1, 1, 0]])
    expected = torch.tensor([[-1.0, 1.0, 0.0]]) / (1.0 + 1e-8) ** 0.5
    torch.testing.assert_close(masked_whiten(x, mask), expected)


def test_whiten_gives_mean_zero_variance_one_on_valid_tokens():
    gen = torch.Generator().manual_seed(0)
    x = 3.0 + 5.0 * torch.randn(8, 6, generator=gen, dtype=torch.float64)
    mask = prefix_mask([1, 6, 3, 2, 5, 6, 4, 1], 6)
    white = masked_whiten(x, mask)
    assert masked_mean(white, mask).item() == pytest.approx(0.0, abs=1e-12)
    assert masked_var(white, mask).item() == pytest.approx(1.0, abs=1e-8)
    assert bool((white[~mask] == 0).all())


def test_gae_literal():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 5.0]])  # the pad column holds garbage
    values = torch.tensor([[0.5, 0.5, 0.5, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # δ = [0, 0, 0.5] (V after T_end = 0); A_2 = 0.5, A_1 = 0.475, A_0 = 0.45125
    torch.testing.assert_close(adv, torch.tensor([[0.45125, 0.475, 0.5, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.95125, 0.975, 1.0, 0.0]]))


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 6), min_size=1, max_size=5),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_gae_matches_naive_loop(lengths, gamma, lam, seed):
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randn(len(lengths), 6, generator=gen, dtype=torch.float64)
    values = torch.randn(len(lengths), 6, generator=gen, dtype=torch.float64)
    adv, ret = gae(rewards, values, prefix_mask(lengths, 6), gamma, lam)
    ref_adv, ref_ret = naive_gae(rewards.tolist(), values.tolist(), lengths, gamma, lam)
    torch.testing.assert_close(adv, ref_adv)
    torch.testing.assert_close(ret, ref_ret)


def test_gae_lambda_zero_is_td_error():
    gen = torch.Generator().manual_seed(1)
    rewards, values = torch.randn(3, 5, generator=gen), torch.randn(3, 5, generator=gen)
    mask = prefix_mask([5, 2, 4], 5)
    adv, _ = gae(rewards, values, mask, gamma=0.9, lam=0.0)
    next_values = torch.cat([values[:, 1:] * mask[:, 1:], torch.zeros(3, 1)], dim=1)
    delta = (rewards + 0.9 * next_values - values) * mask
    torch.testing.assert_close(adv, delta)


def test_gae_gamma_lambda_one_is_reward_to_go_minus_value():
    gen = torch.Generator().manual_seed(2)
    rewards, values = torch.randn(3, 5, generator=gen), torch.randn(3, 5, generator=gen)
    mask = prefix_mask([5, 2, 4], 5)
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    reward_to_go = (rewards * mask).flip(1).cumsum(1).flip(1)
    torch.testing.assert_close(adv, (reward_to_go - values) * mask)
    torch.testing.assert_close(ret, reward_to_go * mask)
