"""RL step throughput: samples per second for one full update at 16 prompts × 4 samples (64 samples), at most 32
new tokens — alignpipe PPO vs TRL RLOO (β 0.05, with a reference) and TRL GRPO (β 0) — and rollout generation
alone, alignpipe's sampler vs a raw `model.generate`.

All start from the default pipeline's πSFT and score with its Rφ (the `sft` and `reward` artifacts of the
embedded pipeline; TRL gets Rφ's directory as its reward model, an AutoModelForSequenceClassification), sample
at τ 0.7 with top_k 0 / top_p 1, lr 1e-4, fp32, 2 threads, the same OpenMP wait policy, each in its own process.

A full update is, for alignpipe PPO: sampling 64 responses, reference logprobs and Rφ scores (no grad), policy
logprobs and critic values (a no-grad recompute; in the 1-pass settings the update's own forward, as TRL at
num_iterations 1, see rl.ppo.single_pass), advantages, then the policy and critic updates (the stage's own
`rollout_seconds` + `update_seconds` per rollout); for TRL: one `train` step (generation of 64 completions,
reward model, reference logprobs for RLOO, loss, backward, optimizer step; per-device batch 64,
num_iterations 1), stamped at step end. alignpipe's PPO uses 64 distinct prompts with one response each
(its algorithm), TRL 16 prompts × 4 (theirs): the same 64 rows through the same models. The first update of
each process is a warm-up and not counted.

PPO does more work per sample than RLOO/GRPO by design (a critic, trained too). Three PPO settings are
measured: one optimization pass (ppo_epochs 1, one minibatch of 64: the same optimizer work per generation
batch as TRL's single step) with the default separate critic (a value model initialized from Rφ: one more
forward in the rollout, one more forward + backward + AdamW step in the update), the same with `critic:
shared` (a value head on the policy, PPO.md item 19: its value loss rides on the policy's forward and backward)
— the target applies to both — and the pipeline's defaults (4 epochs × minibatches of 8: 32 policy and 32
critic steps per rollout).
"""

from __future__ import annotations

import json
import sys
import time

from benchmarks import _fixtures as fx
from benchmarks import peers
from benchmarks.harness import Bench, Metric, benchmark, run_json

ROLLOUTS = 8  # per process: 1 warm-up + 7 timed (with 3 timed, runs varied ±25 %)
SAMPLES_S = Metric("samples/s", "higher", target=1.5)
ONE_PASS = {"ppo_epochs": 1, "minibatch_size": 64}
ONE_PASS_SHARED = {**ONE_PASS, "critic": "shared"}
DEFAULTS: dict = {}


def _generation_rows(b: Bench, art: dict) -> None:
    """Rollout generation alone, in this process: models.forward.sample_responses vs model.generate."""
    import torch

    from alignpipe.data import SkipCounter, parse_prompts
    from alignpipe.data.io import read_records
    from alignpipe.data.tokenize import encode_prompt
    from alignpipe.models.build import load_causal_lm, load_tokenizer
    from alignpipe.models.forward import pad_left, sample_responses, use_fused_kernels

    torch.set_num_threads(fx.THREADS)
    tok = load_tokenizer(art["sft"])
    path = fx.data_file(art["rl_prompts"])
    prompts = parse_prompts(read_records(path), str(path), SkipCounter(str(path), max_fraction=0.01))[:64]
    ids = [encode_prompt(tok, p) for p in prompts]
    ours_model = use_fused_kernels(load_causal_lm(art["sft"])).eval()
    raw_model = load_causal_lm(art["sft"]).eval()
    seeds = iter(range(10**6))

    def ours() -> float:
        t0 = time.perf_counter()
        batch = sample_responses(ours_model, tok, ids, temperature=0.7, max_new_tokens=32, seed=next(seeds))
        return float(batch.response_mask.sum()) / (time.perf_counter() - t0)

    prompt_ids, prompt_mask = pad_left(ids, tok.pad_token_id)

    def raw() -> float:
        t0 = time.perf_counter()
        torch.manual_seed(next(seeds))
        with torch.no_grad():
            out = raw_model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, do_sample=True, top_k=0,
                                     top_p=1.0, temperature=0.7, max_new_tokens=32, pad_token_id=tok.pad_token_id,
                                     eos_token_id=tok.eos_token_id)
        resp = out[:, prompt_ids.shape[1]:]
        is_eos = (resp == tok.eos_token_id).long()
        n = int(((torch.cumsum(is_eos, 1) - is_eos) == 0).sum())
        return n / (time.perf_counter() - t0)

    b.compare("rollout generation, 64 × ≤32 tokens", Metric("tokens/s", "higher"), ours=ours,
              peer=("HF model.generate (raw)", raw), repeats=7,
              note="generated tokens through the first EOS per second; in-process, same πSFT weights")


@benchmark("rl_step", title="RL step throughput", peers=("trl",), order=22)
def run(b: Bench) -> None:
    art = fx.rlhf_artifacts("reward")
    wd = b.workdir
    prompts = wd / "rl_prompts.jsonl"
    fx.copy_data_file(art["rl_prompts"], prompts)
    env = fx.worker_env()
    trl_py = str(peers.bin_path("trl", "python"))
    info: dict[str, list[dict]] = {}

    def ours(params: dict, key: str):
        def fn() -> float:
            r = run_json([sys.executable, str(fx.WORKERS / "ours_rl.py"), str(art["sft"]), str(art["reward"]),
                          str(art["rl_prompts"]), str(wd / key), "--rollouts", str(ROLLOUTS), "--batch", "64",
                          "--new-tokens", "32", "--params", json.dumps(params)], env=env)
            info.setdefault(key, []).append(r)
            return r["samples_per_s"]
        return fn

    def trl(algo: str):
        def fn() -> float:
            r = run_json([trl_py, str(fx.WORKERS / "trl_rl.py"), algo, str(art["sft"]), str(art["reward"]),
                          str(prompts), str(wd / algo), "--steps", str(ROLLOUTS), "--warmup", "1"], env=env)
            r.pop("logs", None)
            info.setdefault(algo, []).append(r)
            return r["samples_per_s"]
        return fn

    b.config(model="default πSFT, Rφ", prompts="default rl_prompts", samples_per_update=64,
             trl_layout="16 prompts × 4 generations", ppo_layout="64 prompts × 1", max_new_tokens=32,
             temperature=0.7, updates_per_process=f"{ROLLOUTS} (first not counted)", threads=fx.THREADS,
             dtype="fp32", OpenMP_wait_policy=f"both sides {fx.WAIT_POLICIES['spin']}", rloo_beta=0.05,
             grpo_beta=0.0)
    cols = b.interleave([ours(ONE_PASS, "ppo_one_pass"), trl("rloo"), trl("grpo"), ours(DEFAULTS, "ppo_default"),
                         ours(ONE_PASS_SHARED, "ppo_one_pass_shared")], repeats=5, warmup=0)
    one, rloo, grpo, default, shared = (b.series(lbl, c) for lbl, c in zip(
        ("alignpipe PPO, 1 epoch × 64", "TRL RLOOTrainer β 0.05", "TRL GRPOTrainer β 0",
         "alignpipe PPO, 4 epochs × 8", "alignpipe PPO shared critic, 1 epoch × 64"), cols, strict=True))
    b.add_row("full update, PPO 1 pass vs RLOO", SAMPLES_S, one, rloo,
              note="generation + reference + RM + critic + policy and value update, per sample; the critic a "
                   "separate value model (the default, PPO.md item 19)")
    b.add_row("full update, PPO 1 pass, shared critic vs RLOO", SAMPLES_S, shared, rloo,
              note="critic: shared — a value head on the policy, one forward and backward for both losses "
                   "(PPO.md items 18–19)")
    b.add_row("full update, PPO 1 pass vs GRPO", Metric("samples/s", "higher"), one, grpo)
    b.add_row("full update, PPO pipeline defaults vs RLOO", Metric("samples/s", "higher"), default, rloo,
              note="4 PPO epochs × 8 minibatches for policy and critic: 32× the optimizer steps of RLOO")
    for key in ("ppo_one_pass", "ppo_default", "ppo_one_pass_shared"):
        if info.get(key):
            rs = info[key]
            b.extra[f"{key}_split_s"] = {"rollout": sorted(r["rollout_s"] for r in rs)[len(rs) // 2],
                                         "update": sorted(r["update_s"] for r in rs)[len(rs) // 2]}
    b.extra["workers"] = info
    _generation_rows(b, art)
