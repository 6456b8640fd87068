"""Scaling out on this 2-core machine: data-parallel SFT and SFT cost as the model grows (PPO's models placed apart:
the `placement` benchmark).

**Data parallel.** The sft stage on the default pipeline's πSFT base and demonstrations (as the `sft` benchmark:
batch 16, length-grouped, fp32), as 2 processes × 1 thread (torch.distributed, gloo, DDP; each rank takes half of
every global batch of 16; the loss is the global token mean, so both runs follow the same curve) against 1
process × 2 threads — the same 2 cores used two ways. Target ≥ 0.9×. The per-step overhead of the distributed path
is 2 processes × 1 thread on a global batch of 32 (16 per rank) against 1 process × 1 thread on batch 16 — the
same work per process, per optimizer step — in ms per step: the gradient all-reduce (gloo over loopback), the
loss and token-count all-reduce, and waiting for the slower rank.

**Cost as work grows.** alignpipe's sft against TRL's SFTTrainer (the `sft` benchmark's workers: the same token ids,
training split, batch 16, length-grouped, lr 5e-4, clipping, 2 threads) on GPT-2-shaped models of ~1M (the
default base: 4 layers × 128, vocabulary 1,024), ~10M (6 × 384), ~40M (8 × 640) and GPT-2 small (12 × 768,
vocabulary 50,257 so that the LM head is GPT-2's; the demonstrations' token ids are the base tokenizer's, a subset),
random init, fp32 and bf16 (alignpipe: autocast, weights and optimizer fp32; TRL: bf16=True, the same autocast).
MFU = 6 · parameters · tokens/s ÷ the `limit` benchmark's measured peak at 2 threads (fp32 rows: the fp32 peak;
bf16 rows: the bf16 peak). Steps per sample shrink with size (the timed window stays a few seconds), 3 rounds
per size, the first steps of every run excluded. 3 quiet rounds (at most 6) per row: the machine is shared.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from benchmarks import _fixtures as fx
from benchmarks import peers
from benchmarks.harness import Bench, Metric, Sample, benchmark, load_result, run_json
from benchmarks.sft import tokenized_train_split

BATCH = 16
DDP_STEPS, DDP_WARMUP = 150, 5
TWO_RANKS = {"procs_per_node": 2, "cpus": 1}
# name -> (layers, width, heads, vocabulary: None = the base tokenizer's), steps, warm-up steps
SIZES = {"~1M": (None, 150, 3), "~10M": ((6, 384, 6, None), 40, 3), "~40M": ((8, 640, 10, None), 14, 2),
         "124M": ((12, 768, 12, 50257), 6, 2)}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def sized_model(base: Path, name: str, shape: tuple[int, int, int, int | None] | None) -> Path:
    """A GPT-2-shaped model of `shape`, random init (seed 0), with the base model's tokenizer; the base itself for
    None. Cached under benchmarks/_runs/."""
    if shape is None:
        return base
    out = fx.WORKSPACE.parent / "scaling-models" / name.strip("~")
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from alignpipe.models.build import load_tokenizer, save_model

    layers, width, heads, vocab = shape
    tok = load_tokenizer(base)
    cfg = GPT2Config(vocab_size=vocab or len(tok), n_positions=1024 if vocab else 128, n_embd=width, n_layer=layers,
                     n_head=heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=tok.bos_token_id,
                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    save_model(GPT2LMHeadModel(cfg), tok, out)
    return out


def _sample(info: dict, key: str, cmd: list[str], metric: str, env: dict[str, str] | None = None):
    def sample() -> float:
        r = run_json(cmd, env=fx.worker_env(env))
        r.pop("logs", None)
        info.setdefault(key, []).append(r)
        return r[metric]
    return sample


def _ours_sft(art: dict, wd: Path, key: str, *, model: Path | None = None, steps: int = DDP_STEPS,  # noqa: PLR0913
              warmup: int = DDP_WARMUP, batch: int = BATCH, params: dict | None = None,
              resources: dict | None = None) -> list[str]:
    data = fx.data_file(art["demos"])
    return [sys.executable, str(fx.WORKERS / "ours_sft.py"), str(model or art["base"]), str(data), str(wd / key),
            "--steps", str(steps), "--batch-size", str(batch), "--warmup", str(warmup),
            "--params", json.dumps({"max_len": 128, **(params or {})}), "--resources", json.dumps(resources or {})]


def _step_ms(samples: list[Sample], records: list[dict]) -> list[Sample]:
    """Each sample as ms per optimizer step (from the worker's timed window; the records of warm-up rounds, which
    are not samples, come first)."""
    return [replace(s, value=1000 * r["seconds"] / r["steps"])
            for s, r in zip(samples, records[len(records) - len(samples):], strict=True)]


def _ddp_rows(b: Bench, art: dict, info: dict) -> None:
    wd = b.workdir
    ddp = _sample(info, "ddp_2x1", _ours_sft(art, wd, "ddp_2x1", resources=TWO_RANKS), "tokens_per_s", ONE_THREAD)
    one = _sample(info, "one_1x2", _ours_sft(art, wd, "one_1x2"), "tokens_per_s")
    ddp32 = _sample(info, "ddp_2x1_b32", _ours_sft(art, wd, "ddp_2x1_b32", batch=2 * BATCH, resources=TWO_RANKS),
                    "tokens_per_s", ONE_THREAD)
    one1 = _sample(info, "one_1x1", _ours_sft(art, wd, "one_1x1"), "tokens_per_s", ONE_THREAD)
    cols = b.interleave([ddp, one, ddp32, one1], repeats=3)
    row = b.add_row("sft, 2 processes × 1 thread (DDP, gloo) vs 1 process × 2 threads",
                    Metric("tokens/s", "higher", target=0.9), b.series("alignpipe, 2 ranks × 1 thread", cols[0]),
                    b.series("alignpipe, 1 process × 2 threads", cols[1]),
                    note="non-pad tokens per second of the whole global batch; the same loss curve both ways")
    b.log(f"DDP efficiency {row['ratio']:.2f}x")
    ddp_ms, one_ms = _step_ms(cols[2], info["ddp_2x1_b32"]), _step_ms(cols[3], info["one_1x1"])
    over = [replace(d, value=d.value - o.value) for d, o in zip(ddp_ms, one_ms, strict=True)]
    b.add_row("distributed path, per-step overhead", Metric("ms/step", "lower"), b.series("2 ranks × batch 16 "
              "(global 32) − 1 process × batch 16, 1 thread each", over),
              note=f"same work per process per step; 1 process × 1 thread takes "
                   f"{sorted(s.value for s in one_ms)[len(one_ms) // 2]:.1f} ms/step")


def _size_rows(b: Bench, art: dict, info: dict) -> None:
    wd = b.workdir
    limit = load_result("limit")
    peak = {p: limit["extra"]["peak"][p][str(fx.THREADS)]["gflops_quiet_estimate"] for p in ("fp32", "bf16")} \
        if limit else None
    trl_py = str(peers.bin_path("trl", "python"))
    tokens = tokenized_train_split(art["base"], fx.data_file(art["demos"]), wd / "train.jsonl")
    b.config(size_models="GPT-2 shaped, random init (seed 0), tied embeddings", size_batch=BATCH,
             size_rounds=3, size_data=tokens)
    for name, (shape, steps, warmup) in SIZES.items():
        model = sized_model(art["base"], name, shape)
        loop = ["--steps", str(steps), "--batch-size", str(BATCH), "--warmup", str(warmup)]
        fns = []
        for prec in ("fp32", "bf16"):
            key = f"{name}-{prec}"
            fns.append(_sample(info, f"ours-{key}", _ours_sft(art, wd, f"ours-{key}", model=model, steps=steps,
                                                              warmup=warmup, params={"precision": prec}),
                               "tokens_per_s"))
            fns.append(_sample(info, f"trl-{key}", [trl_py, str(fx.WORKERS / "trl_sft.py"), str(model),
                                                    str(wd / "train.jsonl"), str(wd / f"trl-{key}"), *loop,
                                                    "--group-by-length", *(["--bf16"] if prec == "bf16" else [])],
                               "tokens_per_s"))
        cols = b.interleave(fns, repeats=3, warmup=0)
        params = info[f"ours-{name}-fp32"][0]["params"]
        for i, prec in enumerate(("fp32", "bf16")):
            ours, trl = cols[2 * i], cols[2 * i + 1]
            b.add_row(f"sft {name} ({params / 1e6:.1f}M params), {prec}", Metric("tokens/s", "higher"),
                      b.series("alignpipe sft", ours), b.series("TRL SFTTrainer", trl), pivot=(name, prec))
            if peak:
                flops = 6.0 * params / 1e9
                mfu = Metric(f"% of {prec} peak", "higher")
                b.add_row(f"MFU {name}, {prec}", mfu, b.series("alignpipe", [replace(s, value=100 * s.value * flops /
                                                                                     peak[prec]) for s in ours]),
                          b.series("TRL", [replace(s, value=100 * s.value * flops / peak[prec]) for s in trl]),
                          pivot=(name, f"MFU {prec}"))
    b.extra["peak_gflops"] = peak


@benchmark("scaling", title="Scaling out: data parallel, cost as work grows", peers=("trl",),
           order=26)
def run(b: Bench) -> None:
    art = fx.rlhf_artifacts("reward")
    info: dict[str, list[dict]] = {}
    b.config(machine="2 cores, shared with other engineers' sessions", ddp_backend="gloo over loopback",
             sft_batch=BATCH, sft_steps=DDP_STEPS,
             OpenMP_wait_policy=f"{fx.WAIT_POLICIES['spin']} (1-thread ranks: nothing to wait for)")
    _ddp_rows(b, art, info)
    _size_rows(b, art, info)
    b.extra["workers"] = info
