import pytest
import torch

from alignpipe.train import linear_lr_factor, linear_warmup_decay


def test_factor_warms_up_then_decays_linearly():
    assert [linear_lr_factor(s, 6, 2) for s in range(6)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    assert [linear_lr_factor(s, 4) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert linear_lr_factor(2, 4, final_fraction=0.2) == pytest.approx(0.6)


def test_scheduler_drives_the_optimizer_and_restores_from_its_state_dict():
    def make():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        return opt, linear_warmup_decay(opt, total_steps=5, warmup_steps=1)

    opt, sched = make()
    lrs = []
    for _ in range(5):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.1, 0.1, 0.075, 0.05, 0.025])
    opt2, sched2 = make()
    opt2.load_state_dict(opt.state_dict())
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr() and sched2.last_epoch == 5


def test_warmup_longer_than_training_is_refused():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="warmup_steps"):
        linear_warmup_decay(opt, total_steps=3, warmup_steps=4)
