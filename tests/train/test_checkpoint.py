"""Checkpointer: a run interrupted, rebuilt from scratch and restored continues bit-identically."""

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from pydantic import BaseModel

from alignpipe.models.build import load_causal_lm
from alignpipe.pipeline.context import Checkpoints
from alignpipe.train import (
    Checkpointer,
    EpochBatches,
    capture_rng_state,
    linear_warmup_decay,
    restore_rng_state,
    seed_everything,
)

DATA = torch.linspace(-1, 1, 24).reshape(12, 2)


def build(seed: int):
    """A model whose training uses every global RNG (dropout: torch; noise: python, numpy) plus a Generator."""
    seed_everything(seed)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    sched = linear_warmup_decay(opt, total_steps=10, warmup_steps=2)
    order = EpochBatches(len(DATA), 5, seed=11)
    gen = torch.Generator().manual_seed(3)
    return model, opt, sched, order, gen


def train_steps(parts, start: int, stop: int) -> list[float]:
    model, opt, sched, order, gen = parts
    losses = []
    for _ in range(start, stop):
        x = DATA[order.next().indices]
        noise = random.random() + float(np.random.rand()) + float(torch.rand(1, generator=gen))
        loss = (model(x).squeeze(-1) - noise).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def checkpointer(parts, root, key="k") -> Checkpointer:
    model, opt, sched, order, gen = parts
    return Checkpointer(Checkpoints(root), key=key, models={"m": model}, optimizers={"m": opt},
                        schedulers={"m": sched}, generators={"g": gen}, batches={"train": order}, log=lambda m: None)


def test_interrupted_and_restored_run_equals_the_uninterrupted_one(tmp_path):
    straight = build(0)
    expected = train_steps(straight, 0, 10)

    first = build(0)
    head = train_steps(first, 0, 4)
    checkpointer(first, tmp_path).save(4, {"beta": 0.1 + 0.2})
    train_steps(first, 4, 6)  # work after the checkpoint is lost in the "crash"

    fresh = build(123)  # rebuilt from scratch, even with other initial weights and RNG states
    resumed = checkpointer(fresh, tmp_path).restore()
    assert resumed.step == 4 and resumed.state == {"beta": 0.1 + 0.2}
    tail = train_steps(fresh, 4, 10)
    assert head + tail == expected  # bitwise: python floats compared exactly
    for a, b in zip(straight[0].parameters(), fresh[0].parameters(), strict=True):
        assert torch.equal(a, b)
    assert straight[1].state_dict()["state"][0]["exp_avg"].equal(fresh[1].state_dict()["state"][0]["exp_avg"])


def test_tied_weights_roundtrip_and_stay_tied(tiny_model_dirs, tmp_path):
    model = load_causal_lm(tiny_model_dirs["gpt2"])
    with torch.no_grad():
        model.transformer.wte.weight.add_(1.0)
    Checkpointer(Checkpoints(tmp_path), models={"lm": model}, log=lambda m: None).save(1)
    other = load_causal_lm(tiny_model_dirs["gpt2"])
    Checkpointer(Checkpoints(tmp_path), models={"lm": other}, log=lambda m: None).restore()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values(),
                                                 strict=True))
    assert other.lm_head.weight.data_ptr() == other.transformer.wte.weight.data_ptr()


def test_checkpoint_of_another_configuration_is_discarded(tmp_path):
    parts = build(0)
    checkpointer(parts, tmp_path, key="params-A").save(2)
    logged = []
    ckpt = checkpointer(build(0), tmp_path, key="params-B")
    ckpt.log = logged.append
    assert ckpt.restore() is None
    assert "other params" in logged[0] and Checkpoints(tmp_path).latest() is None


def test_no_checkpoint_means_a_fresh_start(tmp_path):
    assert checkpointer(build(0), tmp_path / "none").restore() is None


def test_rng_state_roundtrip():
    seed_everything(5)
    state = capture_rng_state()
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    seed_everything(6)
    restore_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == draws


def test_run_key_changes_with_params_inputs_and_seed():
    from alignpipe.train import run_key

    class P(BaseModel):
        lr: float = 1.0

    def ctx(lr=1.0, seed=0, inp="a"):
        return SimpleNamespace(uses="sft", params=P(lr=lr), seed=seed, inputs={"model": SimpleNamespace(id=inp)})

    base = run_key(ctx())
    assert run_key(ctx()) == base
    assert len({base, run_key(ctx(lr=2.0)), run_key(ctx(seed=1)), run_key(ctx(inp="b"))}) == 4


@pytest.mark.parametrize("missing", ["optim-m.pt", "model-m.safetensors"], ids=["optimizer", "model"])
def test_a_damaged_checkpoint_says_how_to_start_over(tmp_path, missing):
    from alignpipe.pipeline.errors import StageFailed

    checkpointer(build(0), tmp_path).save(2)
    (Checkpoints(tmp_path).latest().path / missing).unlink()
    with pytest.raises(StageFailed, match="cannot be restored .* delete .* to start over"):
        checkpointer(build(0), tmp_path).restore()
