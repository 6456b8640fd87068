"""Worker: alignpipe's `ppo` stage on explicit paths, timed per full update from its own metrics.

    python ours_rl.py SFT_DIR RM_DIR PROMPTS_DIR OUT_DIR --rollouts N --warmup W [--batch 64] [--params JSON]
        [--resources JSON]   # e.g. {"procs_per_node": 2, "cpus": 1, "placement": "split"}

Each rollout (the stage's loop iteration) logs rollout_seconds (sampling `batch` responses of at most
max_new_tokens, the forwards of policy, critic, reference and Rφ — in a single pass the policy's and critic's is
the update's own, with grad) and update_seconds (advantages,
ppo_epochs × minibatches of policy and value updates); each rollout's metrics event is stamped when its update is
done. samples/s = batch × rollouts W+1..N / (stamp N − stamp W), the whole loop iteration (KL control, scheduler,
logging included), as the TRL worker's step-end stamps. Also reported: the rollout and update shares (the stage's
own timers), and the generated tokens. Prints one JSON line.
"""

from __future__ import annotations

import json

from _loop_args import parse_rl_args
from _ours_stage import run_stage


def main() -> None:
    a = parse_rl_args(("--rollouts", {"type": int, "default": 4}), ("--batch", {"type": int, "default": 64}),
                      ("--params", {"default": "{}"}), ("--resources", {"default": "{}"}),
                      ("--curve", {"action": "store_true",
                                   "help": "also return per-rollout gold and KL (quality benchmark)"}))
    if a.warmup < 1:
        raise SystemExit("--warmup must be ≥ 1: the timed window starts at a rollout's stamp")

    params = {"rollouts": a.rollouts, "batch_size": a.batch, "max_new_tokens": a.new_tokens, **json.loads(a.params)}
    rows, total_s = run_stage("ppo", {"policy": a.model, "reward_model": a.rm, "prompts": a.prompts}, params, a.out,
                              "rollout_seconds", json.loads(a.resources) or None)
    timed = [e["values"] for e in rows[a.warmup:]]
    curve = [{"kl": e["values"].get("kl"), "gold": e["values"].get("gold"), "score": e["values"].get("score")}
             for e in rows] if a.curve else None
    roll = sum(v["rollout_seconds"] for v in timed)
    upd = sum(v["update_seconds"] for v in timed)
    seconds = rows[-1]["t"] - rows[a.warmup - 1]["t"]  # stamp to stamp, as the TRL worker's step-end stamps
    print(json.dumps({"samples_per_s": a.batch * len(timed) / seconds, "rollout_s": roll / len(timed),
                      "update_s": upd / len(timed), "rollouts": len(timed), "process_stage_s": total_s,
                      "response_length": sum(v.get("response_length", 0) for v in timed) / len(timed),
                      "score": timed[-1].get("score"), "kl": timed[-1].get("kl"),
                      "train_seconds": sum(e["values"]["rollout_seconds"] + e["values"]["update_seconds"]
                                           for e in rows), "curve": curve}))


if __name__ == "__main__":
    main()
