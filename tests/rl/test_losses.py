import math

import pytest
import torch

from alignpipe.rl.losses import pairwise_accuracy, policy_loss, reward_model_loss, value_loss

# ---- policy loss (item 17) ------------------------------------------------------------------------------------


def test_policy_loss_hand_values():
    ratios = torch.tensor([[1.5, 0.5, 1.1, 0.5, 3.0]])  # the last column is a pad with a wild ratio
    old = torch.zeros(1, 5)
    new = ratios.log()
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0, 1.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    out = policy_loss(new, old, adv, mask, clip_eps=0.2)
    # per token max(−Aρ, −A·clip(ρ)): [−1.2 (clipped), −0.5, 1.1, 0.8 (clipped)]
    assert out.loss.item() == pytest.approx((-1.2 - 0.5 + 1.1 + 0.8) / 4)
    assert out.clipfrac.item() == pytest.approx(0.5)
    logs = [math.log(r) for r in (1.5, 0.5, 1.1, 0.5)]
    assert out.approx_kl.item() == pytest.approx(0.5 * sum(x * x for x in logs) / 4)
    assert out.ratio_mean.item() == pytest.approx((1.5 + 0.5 + 1.1 + 0.5) / 4)
    assert (out.ratio_min.item(), out.ratio_max.item()) == pytest.approx((0.5, 1.5))


@pytest.mark.parametrize(
    ("ratio", "adv", "grad_zero"),
    [(1.5, 1.0, True), (0.5, -1.0, True), (0.5, 1.0, False), (1.5, -1.0, False), (1.1, 1.0, False)],
    ids=["A>0-ratio-high", "A<0-ratio-low", "A>0-ratio-low", "A<0-ratio-high", "inside-clip-range"],
)
def test_policy_gradient_is_zero_exactly_when_clipped_on_the_relevant_side(ratio, adv, grad_zero):
    new = torch.tensor([[math.log(ratio)]], requires_grad=True)
    out = policy_loss(new, torch.zeros(1, 1), torch.tensor([[adv]]), torch.ones(1, 1), clip_eps=0.2)
    out.loss.backward()
    if grad_zero:
        assert new.grad.item() == 0.0
        assert out.clipfrac.item() == 1.0
    else:
        assert new.grad.item() == pytest.approx(-adv * ratio)  # d(−Aρ)/d log π = −Aρ
        assert out.clipfrac.item() == 0.0


def test_policy_loss_micro_batches_sum_to_the_minibatch_loss():
    gen = torch.Generator().manual_seed(0)
    new, old, adv = (torch.randn(4, 6, generator=gen) * 0.3 for _ in range(3))
    mask = torch.arange(6)[None, :] < torch.tensor([6, 1, 3, 5])[:, None]
    full = policy_loss(new, old, adv, mask).loss
    n = mask.sum().item()
    parts = [policy_loss(new[i : i + 2], old[i : i + 2], adv[i : i + 2], mask[i : i + 2], 0.2, n).loss for i in (0, 2)]
    assert (parts[0] + parts[1]).item() == pytest.approx(full.item())


def test_policy_loss_ignores_nonfinite_pads():
    new = torch.tensor([[0.1, float("nan")]], requires_grad=True)
    out = policy_loss(new, torch.tensor([[0.0, float("inf")]]), torch.tensor([[1.0, 2.0]]), torch.tensor([[1, 0]]))
    out.loss.backward()
    assert math.isfinite(out.loss.item())
    assert new.grad.tolist() == [[pytest.approx(-math.exp(0.1)), 0.0]]


# ---- value loss (item 18) -------------------------------------------------------------------------------------


def test_value_loss_hand_values():
    values = torch.tensor([[0.5, 0.5, 7.0]], requires_grad=True)
    old = torch.tensor([[0.0, 0.0, 0.0]])
    returns = torch.tensor([[1.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    out = value_loss(values, old, returns, mask, clip_eps=0.2)
    # token 0: V_clip = 0.2, max(0.25, 0.64) = 0.64 (clipped); token 1: max(0.25, 0.04) = 0.25
    assert out.loss.item() == pytest.approx(0.5 * (0.64 + 0.25) / 2)
    assert out.clipfrac.item() == pytest.approx(0.5)
    out.loss.backward()
    # clipped token gets no gradient; unclipped: d/dV ½·(V − R)²/2 = (V − R)/2
    assert values.grad.tolist() == [[0.0, pytest.approx(0.25), 0.0]]


def test_value_loss_ignores_nonfinite_pads():
    values = torch.tensor([[0.5, float("inf")]], requires_grad=True)
    old = torch.tensor([[0.45, float("-inf")]])
    out = value_loss(values, old, torch.tensor([[0.4, float("nan")]]), torch.tensor([[1, 0]]))
    out.loss.backward()
    assert out.loss.item() == pytest.approx(0.5 * 0.01)
    assert values.grad.tolist() == [[pytest.approx(0.1), 0.0]]


# ---- reward model (items 23, 24) ------------------------------------------------------------------------------


def test_rm_loss_identical_scores_is_ln2():
    r = torch.tensor([0.3, -2.0, 5.0])
    assert reward_model_loss(r, r.clone()).item() == pytest.approx(math.log(2))


def test_rm_loss_hand_values_with_margin_and_centering():
    assert reward_model_loss(torch.tensor([1.0]), torch.tensor([0.0]), margin=1.0).item() == pytest.approx(math.log(2))
    assert reward_model_loss(torch.tensor([1.0]), torch.tensor([0.0])).item() == pytest.approx(
        math.log(1 + math.exp(-1))
    )
    centered = reward_model_loss(torch.tensor([1.0]), torch.tensor([1.0]), center_coef=0.5)
    assert centered.item() == pytest.approx(math.log(2) + 0.5 * 4.0)


def test_rm_loss_swapping_chosen_and_rejected_negates_the_margin():
    gen = torch.Generator().manual_seed(0)
    chosen, rejected = torch.randn(16, generator=gen), torch.randn(16, generator=gen)
    # −logσ(x) − (−logσ(−x)) = −x, so the two losses differ by exactly the mean margin
    diff = reward_model_loss(chosen, rejected) - reward_model_loss(rejected, chosen)
    assert diff.item() == pytest.approx(-(chosen - rejected).mean().item(), abs=1e-6)


def test_rm_loss_shift_invariant_without_centering_only():
    gen = torch.Generator().manual_seed(1)
    chosen, rejected = torch.randn(16, generator=gen), torch.randn(16, generator=gen)
    base = reward_model_loss(chosen, rejected, margin=0.5)
    assert reward_model_loss(chosen + 3.0, rejected + 3.0, margin=0.5).item() == pytest.approx(base.item(), abs=1e-6)
    centered = reward_model_loss(chosen, rejected, center_coef=0.01)
    assert reward_model_loss(chosen + 3.0, rejected + 3.0, center_coef=0.01).item() > centered.item() + 0.1


def test_rm_loss_overfits_eight_pairs():
    gen = torch.Generator().manual_seed(2)
    feats_w, feats_l = torch.randn(8, 16, generator=gen), torch.randn(8, 16, generator=gen)
    head = torch.nn.Linear(16, 1)
    opt = torch.optim.Adam(head.parameters(), lr=0.1)
    assert pairwise_accuracy(head(feats_w).squeeze(1), head(feats_l).squeeze(1)).accuracy < 1.0
    for _ in range(100):
        opt.zero_grad()
        reward_model_loss(head(feats_w).squeeze(1), head(feats_l).squeeze(1)).backward()
        opt.step()
    with torch.no_grad():
        assert pairwise_accuracy(head(feats_w).squeeze(1), head(feats_l).squeeze(1)).accuracy == 1.0


def test_pairwise_accuracy_counts_ties_as_half():
    out = pairwise_accuracy(torch.tensor([1.0, 2.0, 3.0, 0.0]), torch.tensor([0.0, 2.0, 4.0, 0.0]))
    assert out.accuracy == pytest.approx((1 + 0.5 * 2) / 4)
    assert out.ties == 2
    with pytest.raises(ValueError, match="at least one pair"):
        pairwise_accuracy(torch.zeros(0), torch.zeros(0))


def test_a_runaway_log_ratio_is_clamped_before_exp_so_loss_and_gradient_stay_finite():
    new = torch.tensor([[200.0, -200.0, 0.1]], requires_grad=True)  # exp(200) overflows float32 to inf
    adv = torch.tensor([[-1.0, 1.0, 1.0]])
    out = policy_loss(new, torch.zeros(1, 3), adv, torch.ones(1, 3))
    out.loss.backward()
    assert math.isfinite(out.loss.item()) and torch.isfinite(new.grad).all()
    assert out.ratio_max.item() == pytest.approx(math.exp(20.0), rel=1e-5)
    assert out.ratio_min.item() == pytest.approx(math.exp(-20.0), rel=1e-5)
    assert new.grad[0, 0].item() == 0.0  # beyond the clamp: no gradient, as if clipped
