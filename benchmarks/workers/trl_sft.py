"""Worker (runs in the TRL venv): TRL `SFTTrainer` on alignpipe's own tokenization of the same demonstrations.

    python trl_sft.py MODEL_DIR TOKENIZED_JSONL OUT_DIR --steps N --batch-size B --warmup W [--group-by-length]
        [--bf16]   # mixed precision (autocast to bf16 on CPU): the scaling benchmark's bf16 rows

TOKENIZED_JSONL holds {"input_ids", "completion_mask"} records: exactly the token ids alignpipe's sft trains on
(prompt with BOS, completion, one EOS), its training split; TRL recognizes a pre-tokenized dataset and builds
completion-only labels from completion_mask. Settings: fp32 (bf16=False), gradient_checkpointing=False (TRL
defaults both on, even on CPU), report_to="none", linear schedule, lr 5e-4, no warmup, no weight decay, clipping
1.0, max_length 128, no packing, no eval, no saving; batches in random order (TRL's default) or, with --group-by-
length, transformers' LengthGroupedSampler (`train_sampling_strategy="group_by_length"`). A TrainerCallback stamps
every step end; a wrapper around the data collator counts each batch's non-pad tokens. Throughput = tokens of steps
W+1..N / (stamp N − stamp W). Prints one JSON line.
"""

from __future__ import annotations

import json
import time

import torch
from _loop_args import parse_loop_args, timed_window
from _trl_clock import StepClock


def main() -> None:
    a = parse_loop_args(("--group-by-length", {"action": "store_true"}), ("--bf16", {"action": "store_true"}))

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    records = [json.loads(line) for line in open(a.data)]
    ds = Dataset.from_list(records)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    clock = StepClock()
    cfg = SFTConfig(
        output_dir=a.out, per_device_train_batch_size=a.batch_size, max_steps=a.steps, learning_rate=5e-4,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, bf16=a.bf16, fp16=False,
        gradient_checkpointing=False, report_to="none", save_strategy="no", eval_strategy="no", max_length=128,
        packing=False, completion_only_loss=True, use_cpu=True, dataloader_num_workers=0, seed=0,
        disable_tqdm=True, logging_steps=10,
        train_sampling_strategy="group_by_length" if a.group_by_length else "random",
    )
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[clock.callback()])
    clock.count_batches(trainer, lambda _f, batch: int(batch["attention_mask"].sum()) if "attention_mask" in batch
                        else int((batch["input_ids"] != tok.pad_token_id).sum()))
    t0 = time.perf_counter()
    out = trainer.train()
    total_s = time.perf_counter() - t0
    seconds, tokens, steps = timed_window(clock.stamps, clock.counts, a.warmup)
    print(json.dumps({"tokens_per_s": tokens / seconds, "seconds": seconds, "steps": steps, "tokens": tokens,
                      "train_s": total_s, "batches_collated": len(clock.counts), "train_loss": out.training_loss}))


if __name__ == "__main__":
    main()
