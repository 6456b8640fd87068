import pytest
import torch

from alignpipe.rl.rewards import apply_no_eos_penalty, end_index, eos_emitted, per_token_rewards, response_mask

EOS, PAD = 2, 0


def test_response_mask_keeps_the_eos_and_drops_padding():
    ids = torch.tensor([[5, 6, EOS, PAD, PAD]])
    mask = response_mask(ids, eos_id=EOS, pad_id=PAD)
    assert mask.tolist() == [[True, True, True, False, False]]
    assert end_index(mask).tolist() == [2]
    assert eos_emitted(ids, mask, EOS).tolist() == [True]


@pytest.mark.parametrize(
    ("ids", "mask", "t_end", "ended"),
    [
        ([5, 6, 7, 8, 9], [1, 1, 1, 1, 1], 4, False),  # hit the length limit: T_end = T − 1
        ([EOS, PAD, PAD, PAD, PAD], [1, 0, 0, 0, 0], 0, True),
        ([5, EOS, 7, EOS, PAD], [1, 1, 0, 0, 0], 1, True),  # only the first EOS ends the response
        ([5, 6, PAD, PAD, PAD], [1, 1, 0, 0, 0], 1, False),  # padded without EOS
    ],
    ids=["no-eos", "eos-first", "tokens-after-eos", "pad-without-eos"],
)
def test_response_mask_cases(ids, mask, t_end, ended):
    ids_t = torch.tensor([ids])
    got = response_mask(ids_t, eos_id=EOS, pad_id=PAD)
    assert got.long().tolist() == [mask]
    assert end_index(got).tolist() == [t_end]
    assert eos_emitted(ids_t, got, EOS).tolist() == [ended]


def test_pad_equal_to_eos_is_rejected():
    with pytest.raises(ValueError, match="dedicated pad token"):
        response_mask(torch.tensor([[5, EOS]]), eos_id=EOS, pad_id=EOS)


def test_empty_response_is_rejected():
    with pytest.raises(ValueError, match=r"responses \[1\] have no valid token"):
        end_index(torch.tensor([[1, 0], [0, 0]]))


def test_no_eos_penalty_replaces_the_score():
    scores = torch.tensor([0.7, 0.7, -3.0])
    ended = torch.tensor([True, False, False])
    assert apply_no_eos_penalty(scores, ended, -1.0).tolist() == pytest.approx([0.7, -1.0, -1.0])
    assert apply_no_eos_penalty(scores, ended, -2.5).tolist() == pytest.approx([0.7, -2.5, -2.5])
    assert apply_no_eos_penalty(scores, ended, None) is scores


def test_per_token_rewards_literal():
    scores = torch.tensor([2.0, -1.0])
    kl = torch.tensor([[0.1, 0.2, 0.3, 9.0], [0.4, -0.2, 7.0, 7.0]])  # pad columns hold garbage
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    rewards = per_token_rewards(scores, kl, mask, beta=0.5)
    expected = torch.tensor([[-0.05, -0.1, -0.15 + 2.0, 0.0], [-0.2, 0.1 - 1.0, 0.0, 0.0]])
    torch.testing.assert_close(rewards, expected)


def test_per_token_rewards_place_score_only_at_t_end():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 9, (16, 7), generator=gen)
    lengths = torch.randint(1, 8, (16,), generator=gen)
    for i, n in enumerate(lengths.tolist()):
        if i % 2 and n < 7:
            ids[i, n - 1] = EOS
        ids[i, n:] = PAD
    mask = response_mask(ids, EOS, PAD)
    scores = torch.randn(16, generator=gen)
    kl = torch.randn(16, 7, generator=gen)
    beta = 0.3
    rewards = per_token_rewards(scores, kl, mask, beta)
    t_end = end_index(mask)
    assert (t_end + 1).tolist() == lengths.tolist()
    # Σ_t r_t = S − β Σ_t kl_t over valid tokens
    torch.testing.assert_close(rewards.sum(1), scores - beta * (kl * mask).sum(1))
    # removing the KL part leaves S at T_end and nothing anywhere else
    score_part = rewards + beta * kl * mask
    expected = torch.zeros(16, 7)
    expected[torch.arange(16), t_end] = scores
    torch.testing.assert_close(score_part, expected)
    assert bool((rewards[~mask] == 0).all())
