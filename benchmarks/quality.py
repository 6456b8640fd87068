"""Quality at equal budget: gold score and KL to πSFT after the same wall-clock training time, alignpipe PPO vs
TRL RLOO, on the default task with our Rφ as the reward — and gold score against KL along the way (a plot).

alignpipe: the `ppo` stage with the default pipeline's settings (32 rollouts × 32 prompts, τ 0.7, adaptive β,
critic from Rφ, gold_function logged), on the default πSFT / Rφ / rl_prompts. Its training time (Σ rollout +
update seconds) sets the budget. TRL: `RLOOTrainer` (β 0.05, 16 prompts × 4 samples per step, lr 1e-4, τ 0.7,
Rφ's directory as its reward model — raw head output, RLOO's leave-one-out baseline makes the offset irrelevant)
trained for the same number of seconds, saving its policy every few steps.

Differences that remain, by each tool's own design: alignpipe's lr decays linearly to 0 over its 32 rollouts;
TRL's "linear" schedule spans max_steps (set huge, the budget stops it), so its lr stays ~constant. The budgets
are counted differently: alignpipe's is the stage's rollout + update timers (gold scoring inside the rollout
included; KL control and logging between rollouts not); TRL's is wall clock from the start of training, its
logging and checkpoint saves included — which costs RLOO a few steps.

Evaluation, the same for both final policies and every TRL checkpoint, in this process: one sample per held-out
prompt (the default eval_prompts, 128) at τ 0.7 from the policy, gold = mean VADER score
(alignpipe.task:gold_score) of the responses, KL = mean over responses of Σ_t (log π − log π_SFT) at τ 0.7 (k1,
nats per response). alignpipe's curve points are its own per-rollout training statistics (gold and Σ k1 KL on
the rollout batch, train prompts); the two end points are the held-out evaluation. One run each (wall-clock
budgets on a shared machine: see the others' load column); this is a quality comparison, not a speed one.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from benchmarks import _fixtures as fx
from benchmarks import peers
from benchmarks.harness import RESULTS, Bench, Metric, benchmark, measure, run_json

PPO_PARAMS = {"rollouts": 32, "gold_function": "alignpipe.task:gold_score"}
SAVE_EVERY = 4


def evaluate_policy(policy: Path, reference: Path, prompts_dir: Path, seed: int = 0) -> dict[str, float]:
    """Held-out gold score and KL(π ‖ π_SFT) of one policy directory (see the module docstring)."""
    import torch

    from alignpipe.data import SkipCounter, parse_prompts
    from alignpipe.data.io import read_records
    from alignpipe.data.tokenize import encode_prompt
    from alignpipe.models.build import load_causal_lm, load_tokenizer
    from alignpipe.models.forward import response_logprobs, sample_responses
    from alignpipe.task import gold_score

    torch.set_num_threads(fx.THREADS)
    tok = load_tokenizer(reference)
    path = fx.data_file(prompts_dir)
    prompts = parse_prompts(read_records(path), str(path), SkipCounter(str(path), max_fraction=0.01))
    ids = [encode_prompt(tok, p) for p in prompts]
    pi, ref = load_causal_lm(policy).eval(), load_causal_lm(reference).eval()
    batch = sample_responses(pi, tok, ids, temperature=0.7, max_new_tokens=48, seed=seed)
    texts = tok.batch_decode(batch.responses(), skip_special_tokens=True)
    with torch.no_grad():
        lp, _ = response_logprobs(pi, batch.input_ids, batch.attention_mask, batch.prompt_len, 0.7)
        lr, _ = response_logprobs(ref, batch.input_ids, batch.attention_mask, batch.prompt_len, 0.7)
    kl = ((lp - lr) * batch.response_mask).sum(1)  # (B,)
    return {"gold": statistics.fmean(gold_score(texts)), "kl": float(kl.mean()), "n": len(texts)}


def _plot(ours_curve: list[tuple[float, float]], trl_curve: list[tuple[float, float]], ends: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if ours_curve:
        ax.plot(*zip(*ours_curve, strict=True), "o-", ms=3, color="C0", alpha=0.6,
                label="alignpipe PPO (per rollout, training batch)")
    if trl_curve:
        ax.plot(*zip(*trl_curve, strict=True), "s-", ms=4, color="C1", alpha=0.8,
                label="TRL RLOO (checkpoints, held-out)")
    for label, (kl, gold), color, marker in (("alignpipe PPO, final, held-out", ends["ours"], "C0", "*"),
                                             ("TRL RLOO, final, held-out", ends["trl"], "C1", "*")):
        ax.plot([kl], [gold], marker, ms=14, color=color, markeredgecolor="k", label=label)
    ax.plot([0], [ends["sft_gold"]], "kD", ms=7, label="πSFT (held-out)")
    ax.set_xlabel("KL(π ‖ πSFT), nats per response (τ 0.7)")
    ax.set_ylabel("gold score (VADER, mean)")
    ax.set_title("Gold score vs KL at equal wall-clock budget")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


@benchmark("quality", title="Quality at equal budget: PPO vs RLOO", peers=("trl",), order=30)
def run(b: Bench) -> None:
    art = fx.rlhf_artifacts("reward")
    wd = b.workdir
    env = fx.worker_env()
    prompts = wd / "rl_prompts.jsonl"
    fx.copy_data_file(art["rl_prompts"], prompts)
    res: dict = {}

    def ours() -> None:
        res["ours"] = run_json([sys.executable, str(fx.WORKERS / "ours_rl.py"), str(art["sft"]), str(art["reward"]),
                                str(art["rl_prompts"]), str(wd / "ours"), "--rollouts", str(PPO_PARAMS["rollouts"]),
                                "--batch", "32", "--new-tokens", "48", "--warmup", "1", "--curve",
                                "--params", json.dumps(PPO_PARAMS)], env=env)

    ours_sample = measure(ours)
    budget = res["ours"]["train_seconds"]

    def trl() -> None:
        res["trl"] = run_json([str(peers.bin_path("trl", "python")), str(fx.WORKERS / "trl_rl.py"), "rloo",
                               str(art["sft"]), str(art["reward"]), str(prompts), str(wd / "trl"),
                               "--time-budget", f"{budget:.1f}", "--save-every", str(SAVE_EVERY),
                               "--new-tokens", "48"], env=env)

    trl_sample = measure(trl)
    ends = {"ours": evaluate_policy(wd / "ours" / "policy", art["sft"], art["eval_prompts"]),
            "trl": evaluate_policy(wd / "trl" / "policy", art["sft"], art["eval_prompts"]),
            "sft": evaluate_policy(art["sft"], art["sft"], art["eval_prompts"])}
    trl_curve = []
    for ck in sorted((wd / "trl").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
        e = evaluate_policy(ck, art["sft"], art["eval_prompts"])
        trl_curve.append((e["kl"], e["gold"]))
    ours_curve = [(c["kl"], c["gold"]) for c in res["ours"]["curve"] if c.get("gold") is not None]
    png = RESULTS / "quality-gold-vs-kl.png"
    _plot(ours_curve, trl_curve, {"ours": (ends["ours"]["kl"], ends["ours"]["gold"]),
                                  "trl": (ends["trl"]["kl"], ends["trl"]["gold"]), "sft_gold": ends["sft"]["gold"]},
          png)

    b.config(budget_s=round(budget, 1), ppo=PPO_PARAMS | {"batch_size": 32, "max_new_tokens": 48},
             rloo={"beta": 0.05, "prompts_per_step": 16, "samples": 4, "lr": 1e-4, "max_new_tokens": 48},
             eval="128 held-out prompts × 1 sample at τ 0.7", threads=fx.THREADS)
    for name, key, better in (("gold score after the budget (held-out)", "gold", "higher"),
                              ("KL to πSFT after the budget (held-out), nats", "kl", "lower")):
        o, t = ours_sample, trl_sample
        ser_o = {**b.series("alignpipe PPO", [o]), "median": ends["ours"][key], "min": ends["ours"][key],
                 "max": ends["ours"][key], "values": [ends["ours"][key]], "n": 1}
        ser_t = {**b.series("TRL RLOO", [t]), "median": ends["trl"][key], "min": ends["trl"][key],
                 "max": ends["trl"][key], "values": [ends["trl"][key]], "n": 1}
        b.add_row(name, Metric("gold" if key == "gold" else "nats", better), ser_o, ser_t,
                  note="one run each; the ratio is not a speed-up")
    b.note(f"πSFT itself scores gold {ends['sft']['gold']:.3f} on the same held-out prompts. "
           f"alignpipe PPO trained {len(res['ours']['curve'])} rollouts × 32 in {budget:.0f} s; TRL RLOO "
           f"{res['trl']['steps'] + 1} steps × 64 in {res['trl'].get('train_seconds', 0):.0f} s. "
           f"Plot: ![gold vs KL](../benchmarks/results/{png.name})")
    b.extra.update(ends=ends, ours_curve=ours_curve, trl_curve=trl_curve, ours=res["ours"],
                   trl={k: v for k, v in res["trl"].items() if k != "logs"})
