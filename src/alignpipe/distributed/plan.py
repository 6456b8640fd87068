"""`alignpipe plan`: every stage of a validated pipeline through the planner, for a cluster. Torch-free.

Model sizes come from the graph: the pretrain stage's params, a local model directory's config.json, a known
`hf:` id (memory.HUB_IDS), followed through sft, reward and ppo to the stages that consume them; `model`
(`--model 7B`) replaces every model with a catalog shape. The devices of a stage are its resources on the
cluster: world size = nodes × procs_per_node processes, each driving one GPU (gpus: 1) or, without GPUs, one CPU
process with `memory` bytes (default: its node's memory shared by procs_per_node).

Workloads: training stages run micro-batches of their whole per-replica batch (sft, pretrain: batch_size
sequences of max_len tokens; reward: two sequences per pair); ppo generates its rollout batch (batch_size
sequences of prompt_len + max_new_tokens tokens, shared by the actor replicas) and trains on micro_batch_size
(else minibatch_size) sequences; generate and evaluate hold their models frozen and a KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignpipe.distributed.cluster import Cluster
from alignpipe.distributed.memory import (
    BF16,
    FP32,
    HUB_IDS,
    Footprint,
    GiB,
    ModelShape,
    Precision,
    frozen,
    kv_cache,
    shape_from_dir,
    shape_from_pretrain,
    shape_named,
)
from alignpipe.distributed.placement import (
    Devices,
    Model,
    PlanRefused,
    PPOPlan,
    TrainingPlan,
    Workload,
    plan_ppo,
    plan_training,
)
from alignpipe.pipeline.spec import External, Pipeline, Stage, StageRef

DEFAULT_PROMPT_LEN = 512  # tokens of a PPO prompt when planning (DeepSpeed-Chat uses 256, OpenRLHF 1024)


@dataclass(frozen=True)
class InferencePlan:
    """A stage that only runs frozen models (generate, evaluate): their weights and its KV cache per device."""

    stage: str
    models: tuple[Model, ...]
    devices: Devices
    footprint: Footprint

    def as_dict(self) -> dict:
        return {"kind": "inference", "stage": self.stage, "models": [m.name for m in self.models],
                "bytes_per_device": self.footprint.device}


@dataclass(frozen=True)
class StagePlan:
    stage: str
    uses: str
    plan: TrainingPlan | PPOPlan | InferencePlan | None = None
    note: str = ""  # why there is no plan: no model, not modeled, or the refusal

    @property
    def refused(self) -> bool:
        return self.plan is None and self.note.startswith("refused")

    def as_dict(self) -> dict:
        return {"stage": self.stage, "uses": self.uses, **({"plan": self.plan.as_dict()} if self.plan else {}),
                **({"note": self.note} if self.note else {})}


class UnknownSize(ValueError):
    pass


def plan_pipeline(pipe: Pipeline, cluster: Cluster, *, model: str | None = None, precision: str | None = None,
                  prompt_len: int = DEFAULT_PROMPT_LEN) -> list[StagePlan]:
    """A StagePlan per stage, in the pipeline's order; refusals are notes starting with 'refused'. Precision:
    `precision`, else bf16 for a stage on GPUs and fp32 on CPU processes."""
    override = shape_named(model) if model else None
    out = []
    for name in pipe.order:
        st = pipe.stages[name]
        prec = {"bf16": BF16, "fp32": FP32}[precision or ("bf16" if st.resources.gpus else "fp32")]
        try:
            out.append(_plan_stage(pipe, st, cluster, prec, override, prompt_len))
        except PlanRefused as e:
            out.append(StagePlan(name, st.spec.uses, note=f"refused: {e}"))
        except UnknownSize as e:
            out.append(StagePlan(name, st.spec.uses, note=f"not planned: {e}"))
    return out


def _plan_stage(pipe: Pipeline, st: Stage, cluster: Cluster, prec: Precision,  # noqa: PLR0913
                override: ModelShape | None, prompt_len: int) -> StagePlan:
    uses, p = st.spec.uses, st.params
    devices = stage_devices(st, cluster)
    shape = _ShapeOf(pipe, override)
    if uses in ("pretrain", "sft", "reward"):
        m = shape.output(st.name, "model") if uses == "pretrain" else shape.input(st.name, "model")
        model = Model("model", m, "scalar" if uses == "reward" else "lm", True, _lora(p))
        seq = getattr(p, "max_len", None) or m.max_positions
        rows = 2 if uses == "reward" else 1  # a chosen and a rejected sequence per pair
        work = Workload(p.batch_size * rows, p.batch_size * rows, seq)
        return StagePlan(st.name, uses, plan_training(st.name, model, devices, work, prec, st.resources.sharding))
    if uses == "ppo":
        models = ppo_models(st, shape)
        micro = getattr(p, "micro_batch_size", None) or p.minibatch_size or p.batch_size
        work = Workload(p.batch_size, micro, prompt_len + p.max_new_tokens, generate=True)
        return StagePlan(st.name, uses, plan_ppo(st.name, models, devices, work, prec, st.resources.placement,
                                                 st.resources.sharding))
    if uses in ("generate", "evaluate"):
        return StagePlan(st.name, uses, _inference(st, shape, devices, prec, prompt_len))
    return StagePlan(st.name, uses, note="no model to place" if uses in ("label", "task.reviews") else
                     "not modeled (a user stage: its memory is its own)")


def ppo_models(st: Stage, shape: _ShapeOf) -> list[Model]:
    from alignpipe.stages.ppo import models as held

    names = held(st.params, set(st.inputs))
    actor = shape.input(st.name, "policy")
    critic_src = next((n for n in ("critic_init", "reward_model", "policy") if n in st.inputs), "policy")
    out = [Model("actor", actor, "lm", True, _lora(st.params))]  # ppo's lora adapts the policy only
    if "critic" in names:
        out.append(Model("critic", shape.input(st.name, critic_src), "scalar", True))
    out.append(Model("reference", actor, "lm", False))
    if "reward_model" in names:
        out.append(Model("reward_model", shape.input(st.name, "reward_model"), "scalar", False))
    return out


def _lora(p: object) -> int:
    """The LoRA rank a stage's params train with (0: every weight)."""
    return getattr(p, "lora_r", 0) if getattr(p, "lora", False) else 0


def _inference(st: Stage, shape: _ShapeOf, devices: Devices, prec: Precision, prompt_len: int) -> InferencePlan:
    inputs = [n for n in ("model", "sft", "rlhf", "reward_model") if n in st.inputs]
    models = tuple(Model(n, shape.input(st.name, n), "scalar" if n == "reward_model" else "lm", False) for n in inputs)
    p = st.params
    new = getattr(p, "max_new_tokens", 0)
    rows = getattr(p, "batch_size", 32) * getattr(p, "n", 1)
    fp = sum((frozen(m.shape, m.head, prec, tokens=rows * (prompt_len + new)) for m in models), Footprint())
    lm = next((m for m in models if m.head == "lm"), None)
    if lm is not None:
        fp = fp + Footprint({"kv_cache": kv_cache(lm.shape, prec, rows, prompt_len + new)})
    if fp.total > devices.usable:
        raise PlanRefused(f"stage {st.name!r}: its models and KV cache need {fp.total / GiB:.1f} GiB per device, "
                          f"{(fp.total - devices.usable) / GiB:.1f} GiB more than the {devices.usable / GiB:.1f} GiB "
                          "usable; lower batch_size or max_new_tokens")
    return InferencePlan(st.name, models, devices, fp)


def stage_devices(st: Stage, cluster: Cluster) -> Devices:
    r = st.resources
    if r.gpus:
        return Devices("gpu", r.world_size, cluster.gpu_memory, r.nodes, cluster.memory_per_node, cluster.gpu or "")
    memory = r.memory or (cluster.memory_per_node or 0) // r.procs_per_node
    return Devices("cpu", r.world_size, memory, r.nodes, None, "")


class _ShapeOf:
    """The shape of a stage's model input, followed up the graph to where the model was made or came from."""

    def __init__(self, pipe: Pipeline, override: ModelShape | None):
        self.pipe, self.override = pipe, override

    def input(self, stage: str, name: str) -> ModelShape:
        src = self.pipe.stages[stage].inputs.get(name)
        if isinstance(src, StageRef):
            return self.output(src.stage, src.output)
        if isinstance(src, External):
            return self.override or _external_shape(stage, name, src.uri)
        raise UnknownSize(f"stage {stage!r} has no input {name!r}")

    def output(self, stage: str, output: str) -> ModelShape:
        st = self.pipe.stages[stage]
        uses = st.spec.uses
        if uses == "pretrain":
            return self.override or shape_from_pretrain(st.params)
        if uses in ("sft", "reward"):
            return self.input(stage, "model")
        if uses == "ppo":
            critic = next((n for n in ("critic_init", "reward_model", "policy") if n in st.inputs), "policy")
            return self.input(stage, "policy" if output == "policy" else critic)
        if self.override:
            return self.override
        raise UnknownSize(f"stage {stage!r} ({uses}) makes output {output!r}, whose size the plan cannot tell; "
                          "give --model SIZE")


def _external_shape(stage: str, name: str, uri: str) -> ModelShape:
    if uri.startswith("hf:"):
        repo = uri[3:].split("@")[0]
        if repo in HUB_IDS:
            return shape_named(HUB_IDS[repo])
    elif "://" not in uri and (Path(uri) / "config.json").is_file():
        return shape_from_dir(uri)
    raise UnknownSize(f"stage {stage!r} input {name!r} ({uri}): the plan cannot tell its size; give --model SIZE "
                      "(e.g. 7B)")


def describe_inputs(plans: list[StagePlan]) -> dict[str, Any]:
    """{stage: {model: parameters}} of the planned stages (for the summary line of `alignpipe plan`)."""
    out: dict[str, Any] = {}
    for sp in plans:
        if isinstance(sp.plan, PPOPlan):
            out[sp.stage] = sp.plan.sizes
        elif isinstance(sp.plan, TrainingPlan):
            out[sp.stage] = {"model": sp.plan.model.params}
    return out
