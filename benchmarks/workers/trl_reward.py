"""Worker (runs in the TRL venv): TRL `RewardTrainer` on alignpipe's tokenization of the same preference pairs.

    python trl_reward.py SFT_DIR TOKENIZED_JSONL OUT_DIR --steps N --batch-size B --warmup W [--group-by-length]

TOKENIZED_JSONL holds {"chosen_ids", "rejected_ids", "length"} records (prompt + response + EOS, exactly
alignpipe's tokens), the training split alignpipe's reward stage uses; TRL recognizes the pre-tokenized columns.
The model is πSFT loaded by TRL as AutoModelForSequenceClassification (num_labels=1, fresh head), fp32
(bf16=False), gradient_checkpointing=False, report_to="none", lr 3e-4 linear, clipping 1.0, max_length 128, no
eval/saving; batches in random order (TRL's default) or, with --group-by-length, transformers' LengthGroupedSampler
on the longer row of each pair ("length"). A TrainerCallback stamps every step end. Throughput = pairs of steps
W+1..N / (stamp N − stamp W). Prints one JSON line.
"""

from __future__ import annotations

import json
import time

from _loop_args import parse_loop_args, timed_window
from _trl_clock import StepClock


def main() -> None:
    a = parse_loop_args(("--group-by-length", {"action": "store_true"}))

    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    ds = Dataset.from_list([json.loads(line) for line in open(a.data)])
    tok = AutoTokenizer.from_pretrained(a.model)
    clock = StepClock()
    cfg = RewardConfig(
        output_dir=a.out, per_device_train_batch_size=a.batch_size, max_steps=a.steps, learning_rate=3e-4,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, bf16=False, fp16=False,
        gradient_checkpointing=False, report_to="none", save_strategy="no", eval_strategy="no", max_length=128,
        use_cpu=True, dataloader_num_workers=0, seed=0, disable_tqdm=True, logging_steps=10,
        train_sampling_strategy="group_by_length" if a.group_by_length else "random", length_column_name="length",
        remove_unused_columns=False,  # keeps "length" for the sampler; the collator reads only the ids
    )
    trainer = RewardTrainer(model=a.model, args=cfg, train_dataset=ds, processing_class=tok,
                            callbacks=[clock.callback()])
    clock.count_batches(trainer, lambda features, _batch: len(features))
    t0 = time.perf_counter()
    out = trainer.train()
    total_s = time.perf_counter() - t0
    seconds, pairs, steps = timed_window(clock.stamps, clock.counts, a.warmup)
    print(json.dumps({"pairs_per_s": pairs / seconds, "seconds": seconds, "steps": steps, "pairs": pairs,
                      "train_s": total_s, "train_loss": out.training_loss}))


if __name__ == "__main__":
    main()
