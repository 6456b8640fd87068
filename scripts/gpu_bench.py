"""A short GPU benchmark for scripts/gpu_check.sh: SFT-style training steps of a GPT-2-small-shaped model (12 × 768,
vocabulary 50,257, random init) on cuda:0, batch 16 × 256 tokens, fp32 and bf16 autocast (weights and Adam fp32,
as alignpipe's `precision: bf16`): tokens per second over 20 steps after 3 warm-up steps, MFU against the GPU's
bf16 dense peak when known, and CUDA's peak memory against alignpipe's memory model."""

from __future__ import annotations

import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from alignpipe.distributed.memory import BF16, FP32, shape_from_config, trained

PEAK_TFLOPS = {"A100": 312, "H100": 989, "H800": 989, "L4": 121, "A10G": 70, "4090": 165}  # bf16 dense
BATCH, SEQ, STEPS, WARMUP = 16, 256, 20, 3


def run(precision: str) -> tuple[float, int]:
    cfg = GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, cfg.vocab_size, (BATCH, SEQ), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    for step in range(WARMUP + STEPS):
        if step == WARMUP:
            torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return BATCH * SEQ * STEPS / (time.perf_counter() - t0), torch.cuda.max_memory_allocated()


def main() -> None:
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    shape = shape_from_config(GPT2Config(n_layer=12, n_embd=768, n_head=12, vocab_size=50257,
                                         n_positions=1024).to_dict())
    params = shape.params()
    for precision in ("fp32", "bf16"):
        tokens_s, memory = run(precision)
        mfu = f", MFU {100 * 6 * params * tokens_s / (peak * 1e12):.0f} % of the bf16 peak" if peak else ""
        planned = trained(shape, "lm", FP32 if precision == "fp32" else BF16, tokens=BATCH * SEQ).total
        print(f"{precision}: {tokens_s:,.0f} tokens/s{mfu}; CUDA peak {memory / 2**30:.2f} GiB")
        print(f"plan {precision}: the memory model says {planned / 2**30:.2f} GiB "
              f"(ratio measured/plan {memory / planned:.2f})")


if __name__ == "__main__":
    main()
