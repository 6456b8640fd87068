"""Scaling a stage out: processes, devices and the memory they need (torch-free unless a module says so).

- `memory`: the memory model — model shapes (a catalog from 124M to 70B, or read from a config), and the bytes a
  model takes per device as trained, frozen, sharded or offloaded: weights, gradients, optimizer state,
  activations, logits and the rollout KV cache.
- `placement`: the pure planner — a training stage's sharding (DDP or FSDP) and PPO's four models (actor, critic,
  reference, reward model) mapped to device groups, with the reason for the choice, or a refusal naming the stage
  and the shortfall.
- `cluster`: what the plan is made for: `8xA100-80GB`, `2x8xH100-80GB`, a YAML description, or this machine.
- `plan`: `alignpipe plan PIPELINE --cluster ...`: every stage of a validated pipeline through the planner.
- `world`: a rank's view of torch.distributed (imports torch): init from the launcher's environment, the shard
  of a global batch, the global mean of a loss, data-parallel wrapping (DDP or FSDP2), barriers.
- `launch`: the local launcher (one process per rank, torchrun-style environment, a rank's death fails the stage)
  and the Ray launcher (one actor per rank in a placement group).
- `groups`: PPO's model groups as Ray actors (or in-process), for the split placements.
- `replicas`: PPO's data-parallel actor replicas (imports torch): each rank's share of the rollout batch, sampled
  as one process samples it, the rollouts gathered, minibatch gradients summed over the ranks.
"""
