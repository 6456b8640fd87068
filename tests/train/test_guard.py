import math

import pytest
import torch

from alignpipe.pipeline.context import Checkpoints
from alignpipe.pipeline.errors import StageFailed
from alignpipe.train import check_finite, optimizer_step


def test_finite_values_pass():
    check_finite(torch.tensor(3.0), step=1)
    check_finite(0.0, step=1)


@pytest.mark.parametrize("bad, word", [(math.nan, "NaN"), (math.inf, "inf"), (-math.inf, "inf")],
                         ids=["nan", "inf", "-inf"])
def test_non_finite_stops_naming_step_and_kept_checkpoint(tmp_path, bad, word):
    ckpts = Checkpoints(tmp_path / "ckpt")
    with pytest.raises(StageFailed, match=rf"loss is {word} at step 7; .* no checkpoint had been written yet"):
        check_finite(torch.tensor(bad), step=7, checkpoints=ckpts)
    ckpts.save(5, lambda d: None)
    with pytest.raises(StageFailed, match=r"at step 7; .*the last good checkpoint \(step 5\) is kept in .*step-0+5"
                                          r"\. Fix: lower the learning rate"):
        check_finite(torch.tensor(bad), step=7, checkpoints=ckpts)


def test_optimizer_step_refuses_a_nan_loss_before_touching_the_weights():
    layer = torch.nn.Linear(3, 1)
    before = [p.detach().clone() for p in layer.parameters()]
    opt = torch.optim.AdamW(layer.parameters(), lr=0.1)
    loss = layer(torch.tensor([[math.nan, 0.0, 0.0]])).sum()
    with pytest.raises(StageFailed, match="loss is NaN at step 3"):
        optimizer_step(loss, step=3, optimizer=opt, parameters=layer.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters(), strict=True))


def test_optimizer_step_refuses_a_non_finite_gradient():
    w = torch.nn.Parameter(torch.tensor([0.0]))
    opt = torch.optim.SGD([w], lr=0.1)
    loss = torch.sqrt(w.abs()).sum()  # finite (0) loss whose gradient at 0 is inf·0 = NaN
    with pytest.raises(StageFailed, match="gradient norm is (inf|NaN) at step 1"):
        optimizer_step(loss, step=1, optimizer=opt, parameters=[w], max_grad_norm=1.0)
    assert w.item() == 0.0
