"""Reward-model throughput: preference pairs per second of the training step loop, alignpipe `reward` vs TRL
`RewardTrainer`.

Both start from the default pipeline's πSFT (the `sft` artifact of the embedded pipeline) with a fresh scalar head
and train on the default pipeline's preference pairs (the `labels` artifact: 1024 prompts × 4 πSFT samples, all 6
pairs per prompt, simulated labels), alignpipe's training split (90 %), with the same token ids (alignpipe's
tokenization handed to TRL pre-tokenized as chosen_ids / rejected_ids = prompt + response + EOS), batch 16 pairs
(TRL: 32 rows per forward; alignpipe: 16, one per pair, see models.lean), Bradley-Terry loss, AdamW lr 3e-4 linear
decay, clipping 1.0, the same number of steps, fp32, 2 threads, the same OpenMP wait policy, each in its own
process; TRL with bf16=False, gradient_checkpointing=False, report_to="none". Batch order: alignpipe groups pairs
of similar length (its default); TRL runs both with its default random order and with transformers' length-grouped
sampler, and the 1.5× target is checked against each.

What is timed: the optimizer-step loop only, after 3 warm-up steps (per-step stamps: alignpipe's own metrics
events, TRL's step-end callback). Start-up, loading, tokenization, calibration, held-out evaluation and saving
are excluded on both sides.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks import _fixtures as fx
from benchmarks import peers
from benchmarks.harness import Bench, Metric, benchmark

STEPS = 40
WARMUP = 3
BATCH = 16
PAIRS_S = Metric("pairs/s", "higher", target=1.5)


def tokenized_train_split(model_dir: Path, prefs: Path, out: Path) -> dict:
    """alignpipe's tokenization of the pairs (as the reward stage does it), its training split, for TRL."""
    from alignpipe.data import SkipCounter, parse_preferences
    from alignpipe.data.io import read_records
    from alignpipe.data.tokenize import tokenize_preferences
    from alignpipe.models.build import load_tokenizer
    from alignpipe.train import train_eval_split

    tok = load_tokenizer(model_dir)
    pairs = parse_preferences(read_records(prefs), str(prefs), SkipCounter(str(prefs), max_fraction=0.01))
    samples = tokenize_preferences(tok, pairs, 128)
    train_idx, _ = train_eval_split(len(samples), 0.1, 0)
    lengths = []
    with open(out, "w") as f:
        for i in train_idx:
            s = samples[i]
            longer = len(s.prompt_ids) + max(len(s.chosen_ids), len(s.rejected_ids))
            f.write(json.dumps({"chosen_ids": s.prompt_ids + s.chosen_ids,
                                "rejected_ids": s.prompt_ids + s.rejected_ids, "length": longer}) + "\n")
            lengths += [len(s.prompt_ids) + len(s.chosen_ids), len(s.prompt_ids) + len(s.rejected_ids)]
    return {"train_pairs": len(train_idx), "mean_row_len": round(sum(lengths) / len(lengths), 1),
            "max_row_len": max(lengths)}


@benchmark("reward", title="Reward-model training throughput", peers=("trl",), order=21)
def run(b: Bench) -> None:
    art = fx.rlhf_artifacts("labels")
    wd = b.workdir
    prefs = art["labels"] / "preferences.jsonl"
    shape = tokenized_train_split(art["sft"], prefs, wd / "train.jsonl")
    ours_cmd = [sys.executable, str(fx.WORKERS / "ours_reward.py"), str(art["sft"]), str(art["labels"]),
                str(wd / "ours"), "--steps", str(STEPS), "--batch-size", str(BATCH), "--warmup", str(WARMUP)]
    trl_cmd = [str(peers.bin_path("trl", "python")), str(fx.WORKERS / "trl_reward.py"), str(art["sft"]),
               str(wd / "train.jsonl"), str(wd / "trl"), "--steps", str(STEPS), "--batch-size", str(BATCH),
               "--warmup", str(WARMUP)]
    info: dict[str, list[dict]] = {}
    b.config(model="default πSFT + fresh scalar head", data="default preference pairs (labels artifact)",
             batch_pairs=BATCH, steps=STEPS, warmup_steps_excluded=WARMUP, threads=fx.THREADS, dtype="fp32",
             OpenMP_wait_policy=f"both sides {fx.WAIT_POLICIES['spin']}",
             batch_order="alignpipe: length-grouped (its default); TRL: random (its default) and length-grouped",
             layout="alignpipe: one row per pair (prompt, chosen, rejected; models.lean.pair_scores); "
                    "TRL: two rows per pair (prompt + chosen, prompt + rejected)",
             **{f"data_{k}": v for k, v in shape.items()})
    ours, trl, trl_grouped = b.interleave([
        fx.worker(info, "ours", ours_cmd, "pairs_per_s"), fx.worker(info, "trl", trl_cmd, "pairs_per_s"),
        fx.worker(info, "trl_grouped", [*trl_cmd, "--group-by-length"], "pairs_per_s")], repeats=5)
    b.add_row("train step loop, fp32", PAIRS_S, b.series("alignpipe reward", ours),
              b.series("TRL RewardTrainer", trl), note="(chosen, rejected) pairs per second")
    b.add_row("train step loop, fp32, TRL length-grouped", PAIRS_S,
              b.series("alignpipe reward", ours), b.series("TRL RewardTrainer, length-grouped", trl_grouped))
    b.extra["workers"] = info
