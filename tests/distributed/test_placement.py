"""The planner on a table of cases: model sizes × devices → the plan (layout, groups, devices, sharding), and the
refusals, each naming the stage and the shortfall."""

import pytest

from alignpipe.distributed.memory import BF16, FP32, GiB, ModelShape, shape_named
from alignpipe.distributed.placement import Devices, Model, PlanRefused, Workload, plan_ppo, plan_training

ROLLOUT = Workload(batch=64, micro_batch=8, seq_len=768, generate=True)  # 512 prompt + 256 response tokens
TINY = ModelShape("tiny", 4, 128, 4, 4, 512, 1024, 128, gated_mlp=False, tied=True, learned_positions=True, bias=True)


def gpus(n, gib, nodes=1, host=1152):
    return Devices("gpu", n, gib * GiB, nodes, host * GiB if host else None, "A100")


def cpus(n, gib):
    return Devices("cpu", n, gib * GiB)


def ppo_models(actor, critic=None, shared_critic=False):
    """Actor, critic, reference, reward model; an actor named '13B-lora' trains LoRA adapters of rank 128."""
    lora = 128 if isinstance(actor, str) and actor.endswith("-lora") else 0
    a = actor if isinstance(actor, ModelShape) else shape_named(actor.removesuffix("-lora"))
    c = shape_named(critic) if critic else a
    return [Model("actor", a, "lm", True, lora), *([] if shared_critic else [Model("critic", c, "scalar", True)]),
            Model("reference", a, "lm", False), Model("reward_model", c, "scalar", False)]


PPO_CASES = [
    # (id, actor, critic+RM, devices, placement, expected describe(), actor replicas)
    ("124M-8xA100-colocated", "124M", None, gpus(8, 80), None,
     "colocated: actor+critic+reference+reward_model on 8 devices", 8),
    ("124M+1.3B-8x24GB-split", "124M", "1.3B", gpus(8, 24), None,
     "split: actor+critic on 6 devices | reference+reward_model on 2 devices (activation checkpointing)", 6),
    ("124M+1.3B-4x24GB-separate", "124M", "1.3B", gpus(4, 24), None,
     "separate: actor on 1 device | critic on 1 device | reference on 1 device | reward_model on 1 device "
     "(activation checkpointing)", 1),
    ("1.3B-4x48GB-separate", "1.3B", None, gpus(4, 48), None,
     "separate: actor on 1 device | critic on 1 device | reference on 1 device | reward_model on 1 device", 1),
    ("13B-lora+350M-1x40GB-offload", "13B-lora", "350M", gpus(1, 40), None,
     "offload: actor+critic on 1 device | reference+reward_model on host memory (activation checkpointing)", 1),
    ("7B-8xA100-sharded", "7B", None, gpus(8, 80), None,
     "colocated: actor+critic+reference+reward_model on 8 devices, sharded over 8", 8),
    ("30B-2x8xA100-adam-offload", "30B", None, gpus(16, 80, nodes=2), None,
     "colocated: actor+critic+reference+reward_model on 16 devices, sharded over 16 (activation checkpointing, "
     "Adam state in host memory)", 16),
    ("7B-8xA100-split-asked", "7B", None, gpus(8, 80), "split",
     "split: actor+critic on 6 devices, sharded over 6 | reference+reward_model on 2 devices", 6),
    ("tiny-2cpu-colocated", TINY, None, cpus(2, 3), None,
     "colocated: actor+critic+reference+reward_model on 2 devices", 2),
    ("tiny-2cpu-split-asked", TINY, None, cpus(2, 3), "split",
     "split: actor+critic on 1 device | reference+reward_model on 1 device", 1),
    ("tiny-2cpu-groups", TINY, None, cpus(2, 3), [["actor", "critic", "reference"], ["reward_model"]],
     "groups: actor+critic+reference on 1 device | reward_model on 1 device", 1),
]


@pytest.mark.parametrize("case", PPO_CASES, ids=[c[0] for c in PPO_CASES])
def test_ppo_plans(case):
    _, actor, critic, devices, placement, expected, replicas = case
    precision = BF16 if devices.kind == "gpu" else FP32
    work = Workload(4, 4, 512, True) if actor == "13B-lora" else ROLLOUT  # DeepSpeed-Chat's single-GPU batch
    plan = plan_ppo("ppo", ppo_models(actor, critic), devices, work, precision, placement)
    assert plan.describe() == expected
    assert plan.replicas == replicas
    assert sum(g.devices for g in plan.groups) == devices.count
    assert all(g.footprint.total <= devices.usable for g in plan.groups)
    assert plan.reason


def test_the_reason_names_what_did_not_fit():
    plan = plan_ppo("ppo", ppo_models("7B"), gpus(8, 80), ROLLOUT, BF16)
    assert plan.reason.startswith("colocated: actor+critic+reference+reward_model on 8 devices needs 233.2 GiB "
                                  "per device")
    assert "more than the 76.0 GiB usable" in plan.reason


def test_a_shared_critic_has_three_models():
    plan = plan_ppo("ppo", ppo_models(TINY, shared_critic=True), cpus(2, 3), ROLLOUT, FP32, "split")
    assert plan.describe() == "split: actor on 1 device | reference+reward_model on 1 device"


PPO_REFUSALS = [
    ("70B-8xA100", "70B", gpus(8, 80), None, "auto",
     r"stage 'ppo': PPO's models \(actor 69.0B, critic 68.7B, reference 69.0B, reward_model 68.7B\) do not fit 8 "
     r"A100 GPUs of 80.0 GiB \(76.0 GiB usable\): the closest plan \(colocated: .* sharded over 8 \(activation "
     r"checkpointing\)\) needs 309.3 GiB per device, 233.3 GiB short"),
    ("separate-on-2", "124M", gpus(2, 80), "separate", "auto", r"placement separate needs at least 4 devices"),
    ("7B-ddp-only", "7B", gpus(8, 80), None, "ddp", r"stage 'ppo': .* GiB short"),
    ("7B-no-host-memory", "70B", gpus(32, 80, nodes=4, host=None), None, "auto", r"GiB short"),
]


@pytest.mark.parametrize("case", PPO_REFUSALS, ids=[c[0] for c in PPO_REFUSALS])
def test_ppo_refusals(case):
    _, actor, devices, placement, sharding, match = case
    with pytest.raises(PlanRefused, match=match):
        plan_ppo("ppo", ppo_models(actor), devices, ROLLOUT, BF16, placement, sharding)


SFT = Workload(batch=64, micro_batch=64, seq_len=1024)
TRAINING_CASES = [
    ("124M-1xA100", "124M", gpus(1, 80), "auto", "one device", "a full replica fits the one device"),
    ("1.3B-8xA100-ddp", "1.3B", gpus(8, 80), "auto", "DDP", "a full replica fits each of the 8 devices (DDP)"),
    ("7B-8xA100-fsdp", "7B", gpus(8, 80), "auto", "FSDP over 8", "DDP + activation checkpointing is 29.4 GiB short"),
    ("30B-8xA100-checkpointing", "30B", gpus(8, 80), "auto", "FSDP over 8 + activation checkpointing",
     "FSDP over 8 is 87.5 GiB short"),
    ("70B-8xA100-adam-offload", "70B", gpus(8, 80), "auto",
     "FSDP over 8 + activation checkpointing + Adam state in host memory",
     "FSDP over 8 + activation checkpointing is"),
    ("1.3B-8xA100-fsdp-asked", "1.3B", gpus(8, 80), "fsdp", "FSDP over 8", ""),
]


@pytest.mark.parametrize("case", TRAINING_CASES, ids=[c[0] for c in TRAINING_CASES])
def test_training_plans(case):
    _, size, devices, sharding, expected, reason = case
    plan = plan_training("sft", Model("model", shape_named(size), "lm", True), devices, SFT, BF16, sharding)
    assert plan.describe() == expected and plan.reason.startswith(reason)
    assert plan.footprint.total <= devices.usable and plan.micro_batch == 64 // devices.count


TRAINING_REFUSALS = [
    ("7B-1xA100", "7B", gpus(1, 80), "auto",
     r"stage 'sft': model \(6.7B parameters\) does not fit 1 A100 GPU of 80.0 GiB \(76.0 GiB usable\): one device "
     r"\+ activation checkpointing needs .* GiB per device, .* GiB short"),
    ("7B-ddp-asked", "7B", gpus(8, 80), "ddp", r"DDP \+ activation checkpointing needs .* GiB short"),
    ("fsdp-on-one", "124M", gpus(1, 80), "fsdp", r"resources.sharding fsdp needs more than one process"),
    ("70B-no-host-memory", "70B", gpus(8, 80, host=None), "auto",
     r"stage 'sft': .*: FSDP over 8 \+ activation checkpointing needs 147.3 GiB per device, 71.3 GiB short"),
    ("70B-small-host-memory", "70B", gpus(8, 80, host=850), "auto",
     r"Adam state in host memory needs 34.9 GiB per device and 899.4 GiB of host memory per node, 49.4 GiB short"),
]


@pytest.mark.parametrize("case", TRAINING_REFUSALS, ids=[c[0] for c in TRAINING_REFUSALS])
def test_training_refusals(case):
    _, size, devices, sharding, match = case
    with pytest.raises(PlanRefused, match=match):
        plan_training("sft", Model("model", shape_named(size), "lm", True), devices, SFT, BF16, sharding)
