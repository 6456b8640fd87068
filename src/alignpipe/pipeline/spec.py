"""The pipeline spec (YAML or Python) and its validation into a runnable `Pipeline`.

Validation happens before anything runs and collects every problem at once; each names the file, the stage
and the field, and says what is expected.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from alignpipe.pipeline.errors import UserError, pydantic_problems
from alignpipe.pipeline.fingerprint import derive_seed
from alignpipe.pipeline.gates import parse_gate
from alignpipe.pipeline.graph import find_cycle, topo_order
from alignpipe.pipeline.matrix import BRANCH_SUFFIX, expand_matrix
from alignpipe.pipeline.stagedef import StageDef, StageLookupError, StrictParams, resolve_stage

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
BRANCH_RE = re.compile(rf"^[A-Za-z_][A-Za-z0-9_-]*{BRANCH_SUFFIX}$")  # a matrix branch: name@key=value,...
MAX_NAME = 100  # stage names become file names (logs, work dirs) with room to spare under the usual 255 bytes
MAX_SEED = 2**63 - 1  # seeds reach numpy and torch, which take 0 .. 2**63 - 1
REF_RE = re.compile(rf"^([A-Za-z_][A-Za-z0-9_-]*{BRANCH_SUFFIX})\.([A-Za-z_][A-Za-z0-9_]*)$")
PLACEMENTS = ("auto", "colocated", "split", "separate", "offload")  # alignpipe.distributed.placement's layouts
_MEM_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3,
              "t": 1024**4, "tb": 1024**4}


def parse_memory(value: str | int | float | None) -> int | None:
    if value is None or isinstance(value, (int, float)):
        return None if value is None else int(value)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", value)
    if not m or m.group(2).lower().removesuffix("i") not in _MEM_UNITS:
        raise ValueError(f"memory {value!r} is not a size; expected e.g. 512MB, 4GB or a number of bytes")
    return int(float(m.group(1)) * _MEM_UNITS[m.group(2).lower().removesuffix("i")])


class Resources(StrictParams):
    cpus: float = Field(default=1.0, gt=0, description="CPU slots each of the stage's processes occupies (also "
                        "its thread count)")
    gpus: int = Field(default=0, ge=0, description="GPUs pinned to each process with CUDA_VISIBLE_DEVICES")
    memory: int | None = Field(default=None, description="bytes per process (accepts '4GB'); refused if above the "
                               "machine's")
    nodes: int = Field(default=1, ge=1, description="nodes the stage's processes span (more than 1: --executor ray)")
    procs_per_node: int = Field(default=1, ge=1, description="processes per node; world size = nodes × "
                                "procs_per_node (torch.distributed ranks, alignpipe.distributed)")
    sharding: Literal["auto", "ddp", "fsdp"] = Field(default="auto", description=(
        "how a multi-process training stage holds the model: ddp (a replica per process), fsdp (sharded), auto "
        "(the planner's choice: ddp unless a replica does not fit `memory` or the GPU)"))
    placement: str | list[list[str]] | None = Field(default=None, description=(
        "ppo: where actor, critic, reference and reward_model run — auto, colocated, split (actor+critic | "
        "reference+reward_model), separate, offload (reference and reward model in host memory), or explicit "
        "groups [[actor, critic], [reference, reward_model]]; default auto (alignpipe.distributed.placement)"))

    @property
    def world_size(self) -> int:
        return self.nodes * self.procs_per_node

    @property
    def total_cpus(self) -> float:
        return self.cpus * self.world_size

    @property
    def total_gpus(self) -> int:
        return self.gpus * self.world_size

    @property
    def total_memory(self) -> int:
        return (self.memory or 0) * self.world_size

    @field_validator("placement")
    @classmethod
    def _placement(cls, v: str | list[list[str]] | None) -> str | list[list[str]] | None:
        if isinstance(v, str) and v not in PLACEMENTS:
            raise ValueError(f"placement {v!r}: expected one of {', '.join(PLACEMENTS)}, or a list of model groups")
        if isinstance(v, list) and (not v or not all(v)):
            raise ValueError("placement groups must be non-empty lists of model names, e.g. [[actor, critic], "
                             "[reference, reward_model]]")
        return v

    @field_validator("memory", mode="before")
    @classmethod
    def _mem(cls, v: Any) -> int | None:
        if isinstance(v, bool):
            return v  # refused as a boolean by StrictParams, not read as 1 byte
        mem = parse_memory(v)
        if mem is not None and mem <= 0:
            raise ValueError(f"memory {v!r} must be more than 0 bytes; give e.g. 512MB or 4GB, or leave it out")
        return mem


class StageSpec(StrictParams):
    uses: str = Field(description="built-in stage type or 'package.module:function'")
    inputs: dict[str, str] = Field(default_factory=dict, description="name -> 'stage.output' or a path/URI")
    params: dict[str, Any] = Field(default_factory=dict)
    resources: Resources | None = None
    retries: int = Field(default=0, ge=0, le=100)
    timeout: float | None = Field(default=None, gt=0, description="seconds; kills the stage's process group")
    cache: bool = True
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED,
                             description="overrides the seed derived from the pipeline seed")
    matrix: dict[str, list[Any]] | None = Field(default=None, description="fan out: param -> values (see matrix.py)")
    gates: dict[str, str] = Field(default_factory=dict, description=(
        "metric -> condition ('>= 0.7') on the stage's output summaries; a failed gate rejects the stage "
        "(see alignpipe.pipeline.gates)"))

    @field_validator("gates")
    @classmethod
    def _gates(cls, gates: dict[str, str]) -> dict[str, str]:
        for condition in gates.values():
            parse_gate(condition)
        return gates


VerifyMode = Literal["always", "inputs", "never"]


class TrackingSpec(StrictParams):
    """Where runs are tracked and which models are registered (alignpipe.integrations.mlflow)."""

    mlflow: str | None = Field(default=None, description="MLflow tracking URI (http://host:port, sqlite:///file.db); "
                               "`--mlflow` and $ALIGNPIPE_MLFLOW override it")
    experiment: str | None = Field(default=None, description="MLflow experiment (default: the pipeline name)")
    registry: dict[str, str] = Field(default_factory=dict, description="'stage.output' -> registered model name: "
                                     "model versions created after the run")
    alias: str | None = Field(default=None, description="alias the registered versions get (e.g. candidate)")


class PipelineSpec(StrictParams):
    name: str
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    workspace: str | None = None
    journal: str | None = Field(default=None, description=(
        "postgresql://USER@HOST:PORT/DB: a journal several machines share (password from PGPASSWORD or ~/.pgpass); "
        "default: the embedded SQLite journal"))
    verify: VerifyMode = Field(default="inputs", description=(
        "re-hashing of artifacts: 'inputs' re-hashes what a running stage consumes and re-hashes a cache hit's "
        "files modified since it was sealed; 'always' re-hashes every cache hit in full; 'never' checks sizes only"))
    tracking: TrackingSpec | None = None
    stages: dict[str, StageSpec]

    @field_validator("journal")
    @classmethod
    def _journal(cls, url: str | None) -> str | None:
        from alignpipe.pipeline.journal import check_journal_url

        if url is not None:
            try:
                check_journal_url(url)
            except UserError as e:
                raise ValueError(str(e)) from None
        return url

    @model_validator(mode="before")
    @classmethod
    def _stage_list(cls, data: Any) -> Any:
        """Accept `stages` as a list of {name: ..., ...} too (the Python API's natural form)."""
        if isinstance(data, dict) and isinstance(data.get("stages"), list):
            out: dict[str, Any] = {}
            for i, s in enumerate(data["stages"]):
                s = dict(s.model_dump(exclude_unset=True) if isinstance(s, BaseModel) else s)
                name = s.pop("name", None)
                if name is None:
                    raise ValueError(f"stages[{i}] has no 'name'")
                if name in out:
                    raise ValueError(f"duplicate stage name {name!r}: stage names must be unique")
                out[name] = s
            data = {**data, "stages": out}
        return data


@dataclass(frozen=True)
class StageRef:
    stage: str
    output: str

    def __str__(self) -> str:
        return f"{self.stage}.{self.output}"


@dataclass(frozen=True)
class External:
    uri: str  # absolute local path or fsspec URI


@dataclass
class Stage:
    name: str
    spec: StageSpec
    definition: StageDef
    params: BaseModel  # None only while validation collects problems; never in a returned Pipeline
    inputs: dict[str, StageRef | External]
    seed: int
    resources: Resources

    @property
    def deps(self) -> set[str]:
        return {i.stage for i in self.inputs.values() if isinstance(i, StageRef)}


@dataclass
class Pipeline:
    spec: PipelineSpec
    source: str  # file path or "<python>"
    base_dir: Path
    stages: dict[str, Stage]
    order: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    def workspace(self, override: str | os.PathLike | None = None) -> Path | str:
        """The workspace: `override` (relative to the cwd), else the spec's (relative to its file); a local
        directory (absolute) or an object-store URI."""
        from alignpipe.pipeline.store import workspace_location

        return workspace_location(override or self.spec.workspace or "workspace",
                                  Path.cwd() if override else self.base_dir)


# ---------------------------------------------------------------------------------------------------------------
# loading


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1}); names must be unique",
                key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_pipeline(path: str | os.PathLike, machine: Machine | None = None, base_dir: str | os.PathLike | None = None
                  ) -> Pipeline:
    """Read a YAML spec and validate it; raises UserError listing every problem. Relative paths in it resolve
    against `base_dir` (default: the file's directory)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such pipeline file. Pass a YAML file, or no argument for the built-in default.")
    try:
        raw = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError:
        raise UserError(f"{p}: not UTF-8 text; save the pipeline spec as UTF-8") from None
    except yaml.YAMLError as e:
        raise UserError(f"{p}: invalid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{p}: expected a mapping with 'name', 'seed', 'workspace' and 'stages' at the top level")
    return validate(raw, source=str(p), base_dir=Path(base_dir or p.resolve().parent).resolve(), machine=machine)


def pipeline_from_dict(data: dict[str, Any] | PipelineSpec, base_dir: str | os.PathLike | None = None,
                       machine: Machine | None = None) -> Pipeline:
    """The Python API: the same dict as the YAML (or a PipelineSpec), validated the same way."""
    raw = data.model_dump(exclude_unset=True) if isinstance(data, PipelineSpec) else data
    return validate(raw, source="<python>", base_dir=Path(base_dir or Path.cwd()).resolve(), machine=machine)


def validate(raw: dict[str, Any], source: str, base_dir: Path, machine: Machine | None = None) -> Pipeline:
    raw = expand_matrix(raw, source)  # sweeps become plain stages before anything else looks at them
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as e:
        raise UserError(pydantic_problems(source, "", e)) from None
    machine = machine or Machine.detect()
    problems: list[str] = []
    stages: dict[str, Stage] = {}
    for name, s in spec.stages.items():
        where = f"{source}: stages.{name}"
        if not (NAME_RE.match(name) or BRANCH_RE.match(name)):
            problems.append(f"{where}: stage name must match {NAME_RE.pattern} (letters, digits, _ and -)")
            continue
        if len(name) > MAX_NAME:
            problems.append(f"{where}: stage name is {len(name)} characters; names become file names, keep them "
                            f"to at most {MAX_NAME}")
            continue
        try:
            sdef = resolve_stage(s.uses)
        except StageLookupError as e:
            problems.append(f"{where}.uses: {e}")
            continue
        try:
            params = sdef.parse_params(s.params)
        except ValidationError as e:  # keep checking the stage's other fields: report every problem at once
            problems.extend(pydantic_problems(source, f"stages.{name}.params", e))
            params = None
        resources = s.resources or Resources(cpus=sdef.default_cpus)
        problems.extend(machine.check(resources, f"{where}.resources"))
        if params is not None:
            problems.extend(_check_scale(sdef, params, set(s.inputs), resources, f"{where}.resources"))
        seed = s.seed if s.seed is not None else derive_seed(spec.seed, name)
        stages[name] = Stage(name, s, sdef, params, {}, seed, resources)

    for st in stages.values():
        problems.extend(_resolve_inputs(st, spec, stages, source, base_dir))
        if st.definition.check is not None and st.params is not None:
            problems.extend(f"{source}: stages.{st.name}.{p}" for p in st.definition.check(st.params, set(st.inputs)))
    if problems:
        raise UserError(problems)
    deps = {n: st.deps for n, st in stages.items()}
    cycle = find_cycle(deps)
    if cycle:
        raise UserError(f"{source}: stages form a cycle: {' -> '.join(cycle)}; a stage cannot consume its own "
                        "output, directly or through others")
    return Pipeline(spec, source, base_dir, stages, topo_order(deps))


def _check_scale(sdef: StageDef, params: BaseModel, inputs: set[str], r: Resources, where: str) -> list[str]:
    """More than one process only for stage types that run as ranks; a placement only names models the stage has."""
    out = []
    if r.world_size > 1 and not sdef.distributed:
        out.append(f"{where}.procs_per_node: stage type {sdef.name!r} runs in one process; set nodes: 1 and "
                   "procs_per_node: 1 (pretrain, sft, reward and ppo run as several)")
    if r.sharding == "fsdp" and r.world_size == 1:
        out.append(f"{where}.sharding: fsdp shards the model over the stage's processes and it has one; set "
                   "procs_per_node (× nodes) to 2 or more, or sharding: auto")
    if r.world_size > 1 and r.gpus > 1:
        out.append(f"{where}.gpus: each process of a multi-process stage drives one GPU; for {r.gpus} GPUs per "
                   f"process set gpus: 1 and procs_per_node: {r.procs_per_node * r.gpus}")
    if r.placement is None:
        return out
    models = sdef.models(params, inputs) if sdef.models else ()
    if len(models) < 2:
        return [*out, f"{where}.placement: stage type {sdef.name!r} places no models; a placement maps ppo's actor, "
                      "critic, reference and reward_model to devices — remove it"]
    named = [m for group in r.placement for m in group] if isinstance(r.placement, list) else []
    for m in named:
        if m not in models:
            out.append(f"{where}.placement: names {m!r}, a model this stage does not have; it has: "
                       f"{', '.join(models)}")
    groups = {"split": 2, "separate": len(models)}.get(r.placement, 0) if isinstance(r.placement, str) \
        else len(r.placement)
    if groups > r.world_size:
        out.append(f"{where}.placement: {groups} model groups run in a process each at least, and the stage has "
                   f"{r.world_size}; set procs_per_node (× nodes) to {groups} or more")
    missing, twice = [m for m in models if m not in named], {m for m in named if named.count(m) > 1}
    if named and (missing or twice):
        out.append(f"{where}.placement: every model in exactly one group; "
                   + "; ".join(filter(None, [f"missing {', '.join(missing)}" if missing else "",
                                             f"repeated {', '.join(sorted(twice))}" if twice else ""])))
    return out


def _resolve_inputs(st: Stage, spec: PipelineSpec, stages: dict[str, Stage], source: str, base_dir: Path) -> list:
    problems = []
    where = f"{source}: stages.{st.name}.inputs"
    declared = st.definition.inputs
    for iname, value in st.spec.inputs.items():
        m = REF_RE.match(value)
        local = None if "://" in value or value.startswith("hf:") else (base_dir / os.path.expanduser(value))
        if m and m.group(1) in spec.stages:
            up, out = m.group(1), m.group(2)
            if up in stages and out not in stages[up].definition.outputs:
                have = ", ".join(stages[up].definition.outputs)
                problems.append(f"{where}.{iname}: stage {up!r} has no output {out!r}; it produces: {have}")
            st.inputs[iname] = StageRef(up, out)
        elif local is not None and local.exists():
            st.inputs[iname] = External(str(local.resolve()))
        elif local is None:
            st.inputs[iname] = External(value)
        elif m:
            problems.append(f"{where}.{iname}: {value!r} names no stage {m.group(1)!r} and no file; expected "
                            f"'stage.output' with one of: {', '.join(spec.stages)}, or an existing path")
        else:
            problems.append(f"{where}.{iname}: no such file or directory {str(local)!r}")
    if declared is not None:
        for iname in st.spec.inputs:
            if iname not in declared:
                problems.append(f"{where}.{iname}: stage type {st.spec.uses!r} takes no input {iname!r}; it takes: "
                                f"{', '.join(declared) or 'none'}")
        for iname, idef in declared.items():
            if idef.required and iname not in st.spec.inputs:
                problems.append(f"{where}: missing required input {iname!r} ({idef.kind}: {idef.doc or 'see docs'})")
    return problems


# ---------------------------------------------------------------------------------------------------------------
# the machine the graph must fit on


@dataclass(frozen=True)
class Machine:
    cpus: int
    gpus: int
    memory: int | None
    nodes: int = 1  # a Ray (or planned) cluster's nodes; their largest one's CPUs and GPUs (None: the totals)
    node_cpus: int | None = None
    node_gpus: int | None = None

    @classmethod
    def detect(cls) -> Machine:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return cls(cpus=cpus, gpus=_count_gpus(), memory=_total_memory())

    def check(self, r: Resources, where: str) -> list[str]:
        out = []
        if r.cpus > self.cpus:
            out.append(f"{where}.cpus: asks for {r.cpus:g} CPUs but this machine has {self.cpus}; lower it")
        if r.gpus > self.gpus:
            have = "no GPU" if self.gpus == 0 else f"{self.gpus} GPU(s)"
            out.append(f"{where}.gpus: asks for {r.gpus} GPU(s) but this machine has {have}; set gpus: 0 to run "
                       "on CPU, or run on a machine or cluster that has them")
        if r.memory and self.memory and r.memory > self.memory:
            out.append(f"{where}.memory: asks for {r.memory / 1024**3:.1f} GB but this machine has "
                       f"{self.memory / 1024**3:.1f} GB; lower it")
        return out + self._check_world(r, where)

    def _check_world(self, r: Resources, where: str) -> list[str]:
        """A multi-process stage: its nodes exist, and a node holds procs_per_node processes' CPUs and GPUs."""
        out = []
        cluster = "this machine is one node" if self.nodes == 1 else f"the cluster has {self.nodes}"
        if r.nodes > self.nodes:
            out.append(f"{where}.nodes: asks for {r.nodes} nodes but {cluster}; lower nodes (a Ray cluster with "
                       "more nodes runs it with --executor ray)")
        node_cpus, node_gpus = self.node_cpus or self.cpus, self.node_gpus if self.node_gpus is not None else self.gpus
        if r.procs_per_node == 1 and self.nodes > 1 and r.cpus > node_cpus:  # Ray would keep it pending forever
            out.append(f"{where}.cpus: asks for {r.cpus:g} CPUs but the cluster's largest node has {node_cpus} (a "
                       "process runs on one node); lower it")
        if r.procs_per_node == 1 and self.nodes > 1 and r.gpus > node_gpus:
            out.append(f"{where}.gpus: asks for {r.gpus} GPU(s) but the cluster's largest node has {node_gpus} (a "
                       "process runs on one node); lower it")
        if r.procs_per_node > 1 and r.procs_per_node * r.cpus > node_cpus:
            out.append(f"{where}.procs_per_node: {r.procs_per_node} processes × {r.cpus:g} CPUs need "
                       f"{r.procs_per_node * r.cpus:g} CPUs on a node, which has {node_cpus}; lower procs_per_node "
                       "or cpus")
        if r.procs_per_node > 1 and r.gpus and self.gpus and r.procs_per_node * r.gpus > node_gpus:
            out.append(f"{where}.procs_per_node: {r.procs_per_node} processes × {r.gpus} GPUs need "
                       f"{r.procs_per_node * r.gpus} GPUs on a node, which has {node_gpus}; lower procs_per_node "
                       "or gpus")
        return out


def _count_gpus() -> int:
    env = os.environ.get("ALIGNPIPE_GPUS")
    if env is not None:
        return int(env)
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        return len([d for d in cvd.split(",") if d.strip() and d.strip() != "-1"])
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def _total_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
