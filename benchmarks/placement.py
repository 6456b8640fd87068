"""PPO's four models placed apart on this 2-core machine, against all four in one process.

The ppo stage on the default πSFT, Rφ and RL prompts (64 prompts × ≤ 32 new tokens per rollout, τ 0.7, fp32), with
its models in one process × 2 threads (colocated) against, 1 thread per process:

- **split**: actor+critic | reference+Rφ — the frozen pair scores a rollout while the trainer recomputes its own
  log-probs and values (distributed.groups), the batches sent as tensors over torch.distributed;
- **critic apart**: actor+reference | critic+Rφ — the critic trains in its own rank: it computes V_old and Rφ's
  scores while the trainer samples-then-recomputes log π and log π_ref, and runs the value half of every update
  while the trainer runs the policy half (rl.ppo.Partner), the two swapping gradient norms once per minibatch;
- **separate**: actor | critic | reference | Rφ — OpenRLHF's layout, 4 processes on 2 cores (oversubscribed: shown
  for what it costs here, not as a recommendation on this machine);
- **replicas**: all four models on each of 2 processes, each sampling and updating on half of every batch
  (distributed.replicas) — what the planner picks for `procs_per_node: 2` with these small models.

Each at one optimization pass per rollout (1 epoch × 64) and at the pipeline's defaults (4 epochs × minibatches of
8). samples/s over the rollouts after the first; interleaved, 3 quiet rounds. Split, the critic apart and separate
make the colocated run's artifacts bit for bit (tests/distributed/test_ppo_placement.py), replicas follow its curves
within 1e-5 (test_ppo_replicas.py), so this is speed only.
"""

from __future__ import annotations

import json
import sys

from benchmarks import _fixtures as fx
from benchmarks.harness import Bench, Metric, benchmark, run_json

ROLLOUTS = 6  # 1 warm-up + 5 timed
ONE_PASS = {"ppo_epochs": 1, "minibatch_size": 64}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
LAYOUTS = {  # name -> (label, resources, env)
    "colocated": ("colocated, 1 process × 2 threads", None, None),
    "split": ("split: actor+critic | reference+Rφ, 1 thread each", {"procs_per_node": 2, "cpus": 1,
                                                                   "placement": "split"}, ONE_THREAD),
    "apart": ("critic apart: actor+reference | critic+Rφ, 1 thread each",
              {"procs_per_node": 2, "cpus": 1, "placement": [["actor", "reference"], ["critic", "reward_model"]]},
              ONE_THREAD),
    "separate": ("separate: 4 processes × 1 thread on 2 cores", {"procs_per_node": 4, "cpus": 0.5,
                                                                 "placement": "separate"}, ONE_THREAD),
    "replicas": ("replicas: all four models on each of 2 processes, 1 thread each",
                 {"procs_per_node": 2, "cpus": 1, "placement": "colocated"}, ONE_THREAD),
}


@benchmark("placement", title="PPO placement: split, the critic apart, separate, replicas vs colocated",
           peers=(), order=27)
def run(b: Bench) -> None:
    art = fx.rlhf_artifacts("reward")
    info: dict[str, list[dict]] = {}
    b.config(machine="2 cores, shared with other engineers' sessions", transport="torch.distributed gloo, loopback",
             rollouts=f"{ROLLOUTS} × 64 prompts × ≤ 32 tokens (first not counted)",
             OpenMP_wait_policy=f"{fx.WAIT_POLICIES['spin']} (1-thread ranks: nothing to wait for)")

    def ppo(key: str, params: dict, resources: dict | None, env: dict | None):
        cmd = [sys.executable, str(fx.WORKERS / "ours_rl.py"), str(art["sft"]), str(art["reward"]),
               str(art["rl_prompts"]), str(b.workdir / key), "--rollouts", str(ROLLOUTS), "--batch", "64",
               "--new-tokens", "32", "--params", json.dumps(params), "--resources", json.dumps(resources or {})]

        def sample() -> float:
            r = run_json(cmd, env=fx.worker_env(env))
            r.pop("logs", None)
            info.setdefault(key, []).append(r)
            return r["samples_per_s"]
        return sample

    for what, params in (("1 epoch × 64", ONE_PASS), ("4 epochs × 8", {})):
        tag = "1pass" if params else "default"
        cols = b.interleave([ppo(f"{name}_{tag}", params, res, env) for name, (_, res, env) in LAYOUTS.items()],
                            repeats=3, warmup=0)
        colocated = b.series(LAYOUTS["colocated"][0], cols[0])
        for (name, (label, _, _)), col in zip(LAYOUTS.items(), cols, strict=True):
            if name != "colocated":
                b.add_row(f"ppo {name} vs colocated, {what}", Metric("samples/s", "higher"), b.series(label, col),
                          colocated, note="generation, scoring (overlapped when apart), updates (the policy and "
                          "value halves at once when the critic is apart)")
    b.extra["workers"] = info
