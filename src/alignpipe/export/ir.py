"""The validated pipeline as plain data: what every platform exporter reads, and nothing platform-specific.

An exporter is a pure function `render(ir) -> {filename: text}` over a `PipelineIR`. Each stage becomes one
platform task whose command is `alignpipe stage exec PIPELINE STAGE -w WORKSPACE --platform NAME
--platform-run-id ID`: the same stage entrypoint `alignpipe run` uses, against the same workspace, so a stage
publishes the same artifact id wherever it runs and cache hits carry across platforms.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from pathlib import Path

from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.matrix import split_name
from alignpipe.pipeline.spec import External, Pipeline

# the first retry waits this long, each next one twice as long: the backoff `alignpipe run` uses by default
RETRY_BASE_DELAY_S = 1.0


@dataclass(frozen=True)
class StageIR:
    name: str
    uses: str
    deps: tuple[str, ...]  # upstream stages, in pipeline order
    params: dict  # resolved params (JSON-safe): what DVC tracks in params.yaml
    cpus: float  # cpus, gpus, memory: of all the stage's processes (procs_per_node ranks share the task's machine)
    gpus: int
    memory: int | None  # bytes
    retries: int
    timeout: float | None  # seconds
    cache: bool
    external: tuple[str, ...]  # local paths of external inputs (URIs excluded): what DVC hashes as deps
    image: str | None  # container image for cluster backends (KFP, Airflow's KubernetesPodOperator)

    @property
    def ident(self) -> str:
        """The stage name as a Python identifier (function, step and variable names in generated code)."""
        return py_ident(self.name)

    @property
    def branch(self) -> bool:
        """A branch of a stage's matrix (`ppo@kl_target=2`): its params come from the spec's matrix."""
        return bool(split_name(self.name)[1])

    def backoff(self) -> list[float]:
        """Seconds to wait before retry 1, 2, ...: exponential from RETRY_BASE_DELAY_S."""
        return [RETRY_BASE_DELAY_S * 2**i for i in range(self.retries)]


@dataclass(frozen=True)
class PipelineIR:
    name: str
    seed: int
    spec_path: str  # absolute path of the pipeline YAML every task loads
    workspace: str  # absolute path of the shared workspace
    alignpipe: str  # the `alignpipe` executable tasks call (a name on PATH or an absolute path)
    stages: tuple[StageIR, ...]  # in topological order

    @property
    def ident(self) -> str:
        return py_ident(self.name)

    def stage(self, name: str) -> StageIR:
        return next(s for s in self.stages if s.name == name)

    def command(self, stage: str) -> list[str]:
        """The argv of a stage's task, minus `--platform NAME --platform-run-id ID` (each exporter adds its own)."""
        return [self.alignpipe, "stage", "exec", self.spec_path, stage, "-w", self.workspace]

    def levels(self) -> list[list[str]]:
        """Stages grouped by depth (longest path from a root): each group's stages are independent."""
        depth: dict[str, int] = {}
        for s in self.stages:
            depth[s.name] = 1 + max((depth[d] for d in s.deps), default=-1)
        out: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
        for s in self.stages:
            out[depth[s.name]].append(s.name)
        return out


def py_ident(name: str) -> str:
    """`my-stage` -> `my_stage`; a keyword or a leading digit gets a trailing/leading underscore."""
    ident = re.sub(r"\W", "_", name)
    if ident[:1].isdigit():
        ident = "_" + ident
    return ident + "_" if keyword.iskeyword(ident) else ident


def _check_idents(stages: list[StageIR], source: str) -> None:
    """Platforms name tasks by the identifier form of a stage's name (a sweep branch `ppo@kl_target=0.5` is
    `ppo_kl_target_0_5`): two stages must not share one."""
    seen: dict[str, str] = {}
    for s in stages:
        if s.ident in seen:
            raise UserError(f"{source}: stages {seen[s.ident]!r} and {s.name!r} both become the task name "
                            f"{s.ident!r} on workflow platforms; rename one of them")
        seen[s.ident] = s.name


def build(pipe: Pipeline, *, alignpipe: str = "alignpipe", workspace: str | None = None,
          images: dict[str, str] | None = None) -> PipelineIR:
    """The IR of a validated pipeline. `images`: stage name -> container image ("*" for every other stage)."""
    images = images or {}
    unknown = sorted(set(images) - {"*"} - set(pipe.stages))
    if unknown:
        raise UserError(f"--image {unknown[0]}=...: {pipe.source} has no stage {unknown[0]!r}; its stages: "
                        f"{', '.join(pipe.order)}")
    stages = []
    for name in pipe.order:
        st = pipe.stages[name]
        external = tuple(sorted(i.uri for i in st.inputs.values()
                                if isinstance(i, External) and Path(i.uri).is_absolute()))
        stages.append(StageIR(
            name=name, uses=st.spec.uses, deps=tuple(d for d in pipe.order if d in st.deps),
            params=st.params.model_dump(mode="json"), cpus=st.resources.total_cpus, gpus=st.resources.total_gpus,
            memory=st.resources.total_memory or None, retries=st.spec.retries, timeout=st.spec.timeout,
            cache=st.spec.cache, external=external, image=images.get(name, images.get("*"))))
    _check_idents(stages, pipe.source)
    src = Path(pipe.source)
    return PipelineIR(name=pipe.name, seed=pipe.spec.seed, spec_path=str(src.resolve()),
                      workspace=str(pipe.workspace(workspace)), alignpipe=alignpipe, stages=tuple(stages))
