"""Worker (runs in the TRL venv): TRL `RLOOTrainer` or `GRPOTrainer`, timed per full update.

    python trl_rl.py {rloo,grpo} SFT_DIR RM_DIR PROMPTS_JSONL OUT_DIR --steps N --warmup W
        [--prompts-per-step 16] [--samples 4] [--new-tokens 32] [--lr 1e-4] [--temperature 0.7]
        [--beta B (default: RLOO 0.05, GRPO 0)] [--time-budget S] [--save-every K]

One optimizer step = one generation batch: prompts_per_step prompts × `samples` completions (per-device batch =
generation batch, gradient_accumulation_steps 1, num_iterations 1): generate, score with the reward model (our
Rφ, an AutoModelForSequenceClassification directory, passed to TRL as the reward model), reference logprobs
(RLOO β 0.05; GRPO β 0 has no reference), loss, backward, step. fp32, gradient_checkpointing off,
report_to none, top_k 0, top_p 1. A step-end callback stamps each update; samples/s = samples of steps W+1..N /
(stamp N − stamp W). With --time-budget the run stops after that many seconds of training (wall clock from the
start of training, logging and --save-every checkpoints included); the policy is saved to OUT_DIR/policy (and
every K steps with --save-every) for the quality benchmark to evaluate. Prints one JSON line.
"""

from __future__ import annotations

import json
import time

from _loop_args import parse_rl_args


def main() -> None:  # noqa: PLR0915 — a linear script
    a = parse_rl_args(("--steps", {"type": int, "default": 6}), ("--prompts-per-step", {"type": int, "default": 16}),
                      ("--samples", {"type": int, "default": 4}), ("--lr", {"type": float, "default": 1e-4}),
                      ("--temperature", {"type": float, "default": 0.7}), ("--beta", {"type": float, "default": None}),
                      ("--time-budget", {"type": float, "default": None}),
                      ("--save-every", {"type": int, "default": 0,
                                        "help": "save the policy every N steps (quality curves)"}),
                      leading=[("algo", {"choices": ("rloo", "grpo")})])

    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback

    prompts = [json.loads(line)["prompt"] for line in open(a.prompts)]
    ds = Dataset.from_list([{"prompt": p} for p in prompts])
    tok = AutoTokenizer.from_pretrained(a.model)
    tok.padding_side = "left"
    rm_tok = AutoTokenizer.from_pretrained(a.rm)
    batch = a.prompts_per_step * a.samples
    common = dict(
        output_dir=a.out, per_device_train_batch_size=batch, gradient_accumulation_steps=1, num_generations=a.samples,
        max_completion_length=a.new_tokens, learning_rate=a.lr, lr_scheduler_type="linear", warmup_steps=0,
        max_grad_norm=1.0, bf16=False, fp16=False, gradient_checkpointing=False, report_to="none",
        save_strategy="no", eval_strategy="no", use_cpu=True, dataloader_num_workers=0, seed=0, disable_tqdm=True,
        logging_steps=1, temperature=a.temperature, top_p=1.0, top_k=0, num_iterations=1,
        max_steps=a.steps if a.time_budget is None else 100000,
    )
    if a.save_every:
        common.update(save_strategy="steps", save_steps=a.save_every, save_only_model=True, save_total_limit=None)
    if a.algo == "rloo":
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer
        beta = 0.05 if a.beta is None else a.beta
    else:
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer
        beta = 0.0 if a.beta is None else a.beta
    cfg = Config(**common, beta=beta)
    stamps: list[float] = []
    all_logs: list[dict] = []  # not `logs`: on_log's parameter has that name
    started: list[float] = []

    class Stamp(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            started.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            stamps.append(time.perf_counter())
            if a.time_budget is not None and stamps[-1] - started[0] >= a.time_budget:
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kw):
            if logs:
                all_logs.append({**logs, "t": time.perf_counter() - started[0], "step": state.global_step})

    trainer = Trainer(model=a.model, reward_funcs=a.rm, args=cfg, train_dataset=ds, processing_class=tok,
                      reward_processing_classes=[rm_tok], callbacks=[Stamp()])
    trainer.train()
    w = min(a.warmup, len(stamps) - 1)
    seconds = stamps[-1] - stamps[w - 1] if w >= 1 else stamps[-1] - started[0]
    n_steps = len(stamps) - w
    result = {"samples_per_s": n_steps * batch / seconds, "seconds": seconds, "steps": n_steps,
              "step_seconds": [round(y - x, 3) for x, y in zip([started[0], *stamps[:-1]], stamps, strict=True)],
              "logs": all_logs[-3:] if a.time_budget is None else all_logs}
    if a.time_budget is not None:
        trainer.model.save_pretrained(a.out + "/policy")
        tok.save_pretrained(a.out + "/policy")
        result["train_seconds"] = stamps[-1] - started[0]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
