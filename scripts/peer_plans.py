"""Plan the configurations DeepSpeed-Chat, OpenRLHF and verl publish, with alignpipe's planner, and print the
comparison tables of docs/scaling.md (markdown). Every row is a one-stage pipeline (the peer's PPO step) planned by
`alignpipe.distributed.plan` on the peer's hardware; the peer's settings and sources are in docs/scaling.md.

    python scripts/peer_plans.py > /tmp/peer_plans.md
"""

from __future__ import annotations

from alignpipe.distributed.cluster import parse_cluster
from alignpipe.distributed.memory import GiB
from alignpipe.distributed.plan import plan_pipeline
from alignpipe.pipeline.spec import pipeline_from_dict


def ppo_spec(actor: str, rm: str | None, gpus: int, nodes: int, params: dict) -> dict:
    inputs = {"policy": f"hf:{actor}", "prompts": "hf:prompts"}
    if rm:
        inputs["reward_model"] = f"hf:{rm}"
    return {"name": "peer", "stages": {"ppo": {"uses": "ppo", "inputs": inputs, "params": params, "resources": {
        "nodes": nodes, "procs_per_node": gpus // nodes, "gpus": 1, "cpus": 1}}}}


def plan_cell(actor: str, rm: str | None, cluster: str, params: dict, prompt_len: int) -> str:
    c = parse_cluster(cluster)
    gpus = c.nodes * c.gpus_per_node
    pipe = pipeline_from_dict(ppo_spec(actor, rm, gpus, c.nodes, params), machine=c.machine())
    (sp,) = plan_pipeline(pipe, c, prompt_len=prompt_len)
    if sp.plan is None:
        return "refused: " + sp.note.split(" short")[0].split(", ")[-1] + " short"
    need = max(g.footprint.total for g in sp.plan.groups)
    return f"{sp.plan.describe()}; {need / GiB:.0f} GiB/GPU".replace("|", "\\|")  # a table cell


def deepspeed_chat() -> None:
    """Table 1 of DeepSpeed-Chat's README: step 3, actor OPT-x, critic and reward model OPT-350M, 256 + 256 tokens,
    per GPU 4 sequences generated and trained at once, 1 PPO epoch; LoRA (rank 128) on the actor for 13B and up and
    on one GPU from 6.7B, as their scripts do."""
    clusters = ["1xV100-32GB", "1xA6000-48GB", "1xA100-40GB", "1xA100-80GB", "8xA100-40GB", "8xA100-80GB",
                "8x8xA100-80GB"]
    published = {"1.3B": "all seven", "facebook/opt-6.7b": "all but 1×V100", "facebook/opt-13b":
                 "1×A100-80G, 8×A100-40G, 8×A100-80G, 64×A100-80G", "facebook/opt-30b":
                 "8×A100-40G, 8×A100-80G, 64×A100-80G", "facebook/opt-66b": "8×A100-80G, 64×A100-80G"}
    print("| actor | DeepSpeed-Chat reports a time on | " + " | ".join(clusters) + " |")
    print("|---|---|" + "---|" * len(clusters))
    for actor, reported in published.items():
        cells = []
        for cluster in clusters:
            gpus = eval(cluster.split("x")[0]) * (eval(cluster.split("x")[1]) if cluster.count("x") == 2 else 1)
            lora = actor in ("facebook/opt-13b", "facebook/opt-30b", "facebook/opt-66b") or (
                gpus == 1 and actor != "1.3B")
            params = {"batch_size": 4 * gpus, "minibatch_size": 4 * gpus, "ppo_epochs": 1, "max_new_tokens": 256,
                      **({"lora": True, "lora_r": 128} if lora else {})}
            name = actor if actor != "1.3B" else "facebook/opt-1.3b"
            cells.append(_short(plan_cell(name, "facebook/opt-350m", cluster, params, 256)))
        print(f"| {actor.split('/')[-1].upper()} | {reported} | " + " | ".join(cells) + " |")


def _short(cell: str) -> str:
    if cell.startswith("refused"):
        return "✗ " + cell.split(": ", 1)[1]
    layout, need = cell.split(":", 1)[0], cell.rsplit("; ", 1)[1]
    sharded = "sharded" if "sharded" in cell else "replicas"
    extras = [x for x, k in (("ckpt", "checkpointing"), ("Adam→host", "Adam state")) if k in cell]
    return f"✓ {layout}, {sharded}{', ' + ', '.join(extras) if extras else ''} ({need})"


def others() -> None:
    rows = [
        ("OpenRLHF, Llama-2-70B PPO (train_ppo_llama_ray_70b.sh): 16 GPUs — actor 4, critic 4, ref 2, RM 2, vLLM "
         "2×TP2; ZeRO-3, Adam offload, checkpointing; micro train 1, micro rollout 2 per GPU; 1024 + 1024 tokens",
         "meta-llama/Llama-2-70b-hf", "meta-llama/Llama-2-70b-hf", "2x8xA100-80GB",
         {"batch_size": 32, "minibatch_size": 32, "micro_batch_size": 16, "max_new_tokens": 1024, "ppo_epochs": 1},
         1024),
        ("OpenRLHF, Llama-3-8B PPO (README, hybrid engine): 8 GPUs, all models colocated; ZeRO-3, checkpointing; "
         "micro train 8, micro rollout 16 per GPU; 1024 + 1024 tokens", "meta-llama/Meta-Llama-3-8B",
         "meta-llama/Meta-Llama-3-8B", "8xA100-80GB",
         {"batch_size": 128, "minibatch_size": 128, "micro_batch_size": 64, "max_new_tokens": 1024, "ppo_epochs": 1},
         1024),
        ("verl MIN, Qwen2-7B GRPO: 2×H800, FSDP with parameter and optimizer offload, checkpointing", "Qwen/Qwen2-7B",
         None, "2xH800-80GB", {"batch_size": 32, "minibatch_size": 32, "micro_batch_size": 32,
                                "max_new_tokens": 1024, "ppo_epochs": 1, "critic": "shared",
                                "reward_function": "alignpipe.task:gold_score"}, 1024),
        ("verl MIN, Qwen2.5-14B GRPO (qwen2_14b_grpo_4_h800_fsdp_vllm.sh): 4×H800, parameter and optimizer offload, "
         "checkpointing, micro 16 per GPU, 1024 + 1024 tokens", "Qwen/Qwen2.5-14B", None, "4xH800-80GB",
         {"batch_size": 64, "minibatch_size": 64, "micro_batch_size": 64, "max_new_tokens": 1024, "ppo_epochs": 1,
          "critic": "shared", "reward_function": "alignpipe.task:gold_score"}, 1024),
        ("verl MIN, Qwen2-72B GRPO: 32×H800, FSDP", "Qwen/Qwen2-72B", None, "4x8xH800-80GB",
         {"batch_size": 128, "minibatch_size": 128, "micro_batch_size": 128, "max_new_tokens": 1024,
          "ppo_epochs": 1, "critic": "shared", "reward_function": "alignpipe.task:gold_score"}, 1024),
    ]
    print("| published configuration | alignpipe's plan for the same models and hardware |")
    print("|---|---|")
    for what, actor, rm, cluster, params, prompt in rows:
        print(f"| {what} | {plan_cell(actor, rm, cluster, params, prompt)} |")


if __name__ == "__main__":
    deepspeed_chat()
    print()
    others()
