"""The limit: this CPU's measured matmul throughput, the denominator of every model-FLOPs utilization (item 4).

`torch.mm` GFLOP/s (2·M·N·K flops per product) in fp32 and bf16, with 2 threads and 1 thread, over square
sizes and over the shapes the tiny default LM actually multiplies (batch 16 × 128 tokens = 2048 rows; hidden
128, MLP 512, vocabulary ~650) plus a GPT-2-small-like MLP shape. All configurations are interleaved round-robin
so that a burst of load from other processes hits all of them alike; each sample runs one configuration for
~0.2 s after a warm-up.

The peak saved for later phases (`extra.peak`) is, per dtype and thread count, the best shape's median GFLOP/s
as measured, and a quiet-machine estimate = threads × GFLOP per CPU-second our process got, which other
processes' load does not distort. MFU = model FLOPs/s ÷ peak.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace

from benchmarks.harness import Bench, Metric, Sample, benchmark, per_cpu_second

GFLOPS = Metric("GFLOP/s", "higher")
GFLOPS_CPU = Metric("GFLOP/CPU-s", "higher")

# (label, M, K, N): C[M,N] = A[M,K] @ B[K,N]
SHAPES: list[tuple[str, int, int, int]] = [
    ("square 256", 256, 256, 256),
    ("square 512", 512, 512, 512),
    ("square 1024", 1024, 1024, 1024),
    ("square 2048", 2048, 2048, 2048),
    ("tiny LM qkv 2048×128→384", 2048, 128, 384),
    ("tiny LM MLP up 2048×128→512", 2048, 128, 512),
    ("tiny LM MLP down 2048×512→128", 2048, 512, 128),
    ("tiny LM head 2048×128→650", 2048, 128, 650),
    ("GPT-2-small MLP 2048×768→3072", 2048, 768, 3072),
]
DTYPES = ("fp32", "bf16")
THREADS = (2, 1)
SAMPLE_S = 0.2
WAIT_QUIET_S = 60.0  # at most this long in all, after a busy sample, waiting for the machine to go quiet


def _make(dtype: str, m: int, k: int, n: int):
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g).to(dt)
    b = torch.randn(k, n, generator=g).to(dt)
    return a, b, torch.empty(m, n, dtype=dt)


def _gflops(threads: int, a, b, c) -> float:
    """GFLOP/s of repeated torch.mm(a, b, out=c) for about SAMPLE_S seconds."""
    import torch

    torch.set_num_threads(threads)
    torch.mm(a, b, out=c)  # first call after a thread-count change pays for it
    flops = 2.0 * a.shape[0] * a.shape[1] * b.shape[1]
    iters, t0 = 0, time.perf_counter()
    while True:
        torch.mm(a, b, out=c)
        iters += 1
        dt = time.perf_counter() - t0
        if dt >= SAMPLE_S:
            return flops * iters / dt / 1e9


@benchmark("limit", title="The limit: measured matmul GFLOP/s of this CPU", order=10)
def run(b: Bench) -> None:
    import torch

    configs = [(d, t, shape) for d in DTYPES for t in THREADS for shape in SHAPES]
    tensors = {(d, s[0]): _make(d, *s[1:]) for d in DTYPES for s in SHAPES}
    b.config(op="torch.mm(out=)", dtypes=list(DTYPES), threads=list(THREADS), sample_s=SAMPLE_S,
             torch=torch.__version__, mkldnn_bf16=torch.backends.mkldnn.is_available(),
             cpu_capability=torch.backends.cpu.get_cpu_capability(), shapes=[s[0] for s in SHAPES])
    fns = [lambda d=d, t=t, s=s: _gflops(t, *tensors[(d, s[0])]) for d, t, s in configs]
    results = b.interleave(fns, repeats=5, warmup=1, max_redo=3, paired=False, wait_quiet_s=WAIT_QUIET_S)
    best: dict[tuple[str, int], tuple[list[Sample], str]] = {}
    for (d, t, s), samples in zip(configs, results, strict=True):
        per_cpu = b.series(f"{d}, {t} thr per CPU-s", per_cpu_second(samples))
        b.add_row(f"{d}, {t} thread{'s' if t > 1 else ''}: {s[0]}", GFLOPS, b.series(f"{d}, {t} thr", samples),
                  pivot=(s[0], f"{d}, {t} thr"))
        b.add_row(f"{d}, {t} thread{'s' if t > 1 else ''}: {s[0]} — per CPU-second", GFLOPS_CPU, per_cpu,
                  pivot=(s[0], f"{d}, {t} thr, per CPU-s"))
        # the best shape is chosen on the load-robust figure, so a burst of load cannot pick it
        if (d, t) not in best or per_cpu["median"] > _median_per_cpu(best[(d, t)][0]):
            best[(d, t)] = (samples, s[0])
    b.extra["peak"] = _peaks(b, best)
    b.note("**Measured** = GFLOP per wall second of the best shape: what this machine delivered *at the time*, "
           "other processes included. **Quiet-machine estimate** = threads × GFLOP per CPU-second our process "
           "actually got (getrusage) for the same runs: it does not drop when others take our cores, and it "
           "includes the threads' synchronization cost. Later phases compute model-FLOPs utilization against "
           "`harness.load_result('limit')['extra']['peak'][dtype][threads]['gflops_quiet_estimate']` (per wall "
           "second on a quiet machine) or `['gflops_per_cpu_s']` (per CPU-second their stage got).")


def _median_per_cpu(samples: list[Sample]) -> float:
    return statistics.median(s.value for s in per_cpu_second(samples) if s.used)


def _peaks(b: Bench, best: dict[tuple[str, int], tuple[list[Sample], str]]) -> dict[str, dict[str, dict]]:
    """Summary rows and the saved peak, per dtype and thread count."""
    peak: dict[str, dict[str, dict]] = {}
    for (d, t), (samples, shape) in best.items():
        plural = "s" if t > 1 else ""
        ser = b.add_row(f"peak {d}, {t} thread{plural}, measured (best shape: {shape})", GFLOPS,
                        b.series(f"{d}, {t} thr", samples))["ours"]
        per_cpu = per_cpu_second(samples)
        est = [replace(x, value=x.value * t) for x in per_cpu]
        quiet = b.add_row(f"peak {d}, {t} thread{plural}, quiet-machine estimate ({t} × GFLOP per CPU-second)",
                          GFLOPS, b.series(f"{d}, {t} thr estimate", est))["ours"]
        peak.setdefault(d, {})[str(t)] = {
            "gflops": ser["median"], "max_sample": ser["max"], "shape": shape,
            "gflops_per_cpu_s": quiet["median"] / t, "gflops_quiet_estimate": quiet["median"],
            "own_cores_median": ser["own_cores_median"], "others_cores_median": ser["others_cores_median"],
        }
    for d in DTYPES:
        one, two = peak[d]["1"], peak[d]["2"]
        b.note(f"{d}: one core does **{one['gflops_per_cpu_s']:.0f} GFLOP per CPU-second** ({one['shape']}); with "
               f"2 threads the estimate is {two['gflops_quiet_estimate']:.0f} GFLOP/s, the best single 2-thread "
               f"sample reached {two['max_sample']:.0f} GFLOP/s, and the 2-thread median {two['gflops']:.0f} "
               f"GFLOP/s while our process got {two['own_cores_median']:.2f} cores (others "
               f"{two['others_cores_median']:.2f}).")
    return peak
