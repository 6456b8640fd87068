"""Training-loop utilities shared by the pretrain, sft, reward and ppo stages (plain PyTorch, no HF Trainer).

Imports torch: import it inside a stage's run(), never at a stage module's top level.

- `seeding`: `seed_everything(seed)`, `sub_seed(seed, *keys)`, `capture_rng_state()`, `restore_rng_state(s)`
- `batches`: `EpochBatches(n, batch_size, seed)` (resumable by epoch and position), `train_eval_split`
- `schedule`: `linear_warmup_decay(optimizer, total_steps, warmup_steps)`, `linear_lr_factor`
- `guard`: `check_finite(value, step=, what=, checkpoints=)` (StageFailed on NaN/inf, names the kept checkpoint)
- `checkpoint`: `Checkpointer(...)`: `.save(step, state)` / `.restore() -> Resumed | None`; `run_key(ctx)`
- `loop`: `make_adamw`, `optimizer_step` (guarded step), `lm_loss`, `evaluate_lm`
- `setup`: `setup_training(ctx, model, order, params) -> Training` (the steps/optimizer/schedule/resume block)

The loop every trainer follows, resumable bit-identically on CPU (same thread count):

    seed_everything(ctx.seed)                                  # seed
    ...                                                        # inputs, data (deterministic)
    model = ...; opt = make_adamw(model, lr)                   # model, optimizer
    sched = linear_warmup_decay(opt, total_steps, warmup_steps)
    order = EpochBatches(len(train), batch_size, sub_seed(ctx.seed, "order"))
    ckpt = Checkpointer(ctx.checkpoints, key=run_key(ctx), models={"model": model}, optimizers={"model": opt},
                        schedulers={"model": sched}, batches={"train": order}, log=ctx.log)
    resumed = ckpt.restore()                                   # after building everything
    for step in range(resumed.step if resumed else 0, total_steps):
        batch = order.next()
        loss = ...
        optimizer_step(loss, step=step + 1, optimizer=opt, scheduler=sched, parameters=model.parameters(),
                       max_grad_norm=1.0, checkpoints=ctx.checkpoints)
        ctx.log_metrics(step + 1, loss=float(loss))
        if (step + 1) % checkpoint_every == 0 and step + 1 < total_steps:
            ckpt.save(step + 1, state={...})                   # stage state: JSON-serializable
    ...                                                        # eval, save

Bit-identity rules: derive per-item seeds with `sub_seed` (never from the wall clock, dict order or the
amount of the global stream used so far); keep dropout off; never iterate sets; checkpoint everything that
carries over between steps (a torch.Generator goes in `generators=`).
"""

from alignpipe.train.batches import Batch, EpochBatches, LengthGroupedBatches, train_eval_split
from alignpipe.train.checkpoint import Checkpointer, Resumed, run_key
from alignpipe.train.guard import check_finite
from alignpipe.train.loop import autocast, evaluate_lm, lm_loss, make_adamw, optimizer_step
from alignpipe.train.schedule import linear_lr_factor, linear_warmup_decay
from alignpipe.train.seeding import capture_rng_state, restore_rng_state, seed_everything, sub_seed
from alignpipe.train.setup import Training, setup_training

__all__ = [
    "Batch",
    "Checkpointer",
    "EpochBatches",
    "LengthGroupedBatches",
    "Resumed",
    "Training",
    "autocast",
    "capture_rng_state",
    "check_finite",
    "evaluate_lm",
    "linear_lr_factor",
    "linear_warmup_decay",
    "lm_loss",
    "make_adamw",
    "optimizer_step",
    "restore_rng_state",
    "run_key",
    "seed_everything",
    "setup_training",
    "sub_seed",
    "train_eval_split",
]
