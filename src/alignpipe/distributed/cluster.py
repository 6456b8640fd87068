"""What a plan is made for: a cluster of nodes with GPUs (or CPUs only), from a short name or a YAML file.

    8xA100-80GB          one node with 8 A100 80GB
    4x8xH100-80GB        4 nodes with 8 H100 80GB each
    2xL4-24GB            one node with 2 L4
    local                this machine (its CPUs, GPUs and memory)
    cluster.yaml         nodes, gpus_per_node, gpu (a name below) or gpu_memory, cpus_per_node, memory_per_node

Host CPUs and memory per node default to 12 CPUs and 144 GiB per GPU (AWS p4d/p4de: 96 vCPUs, 1152 GiB for 8
A100s); give cpus_per_node and memory_per_node for anything else. Torch-free.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from alignpipe.distributed.memory import GiB
from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.spec import Machine, parse_memory

# GPU memory as the vendors name it (an "80GB" A100 has 80 GiB: nvidia-smi shows 81920 MiB)
GPUS = {"A100-40GB": 40, "A100-80GB": 80, "H100-80GB": 80, "H800-80GB": 80, "H200-141GB": 141, "A10G-24GB": 24,
        "L4-24GB": 24, "L40S-48GB": 48, "A6000-48GB": 48, "RTX4090-24GB": 24, "V100-32GB": 32}
CPUS_PER_GPU, HOST_GIB_PER_GPU = 12, 144
NAME_RE = re.compile(r"^(?:(\d+)x)?(\d+)x([A-Za-z0-9]+-\d+GB)$", re.IGNORECASE)


@dataclass(frozen=True)
class Cluster:
    name: str
    nodes: int
    gpus_per_node: int
    gpu: str | None  # a GPUS name, or None for CPU-only nodes
    gpu_memory: int  # bytes per GPU (0 without GPUs)
    cpus_per_node: int
    memory_per_node: int | None  # host memory, bytes

    def machine(self) -> Machine:
        """The cluster as the spec validation sees it (totals, and what one node has)."""
        return Machine(cpus=self.cpus_per_node * self.nodes, gpus=self.gpus_per_node * self.nodes,
                       memory=self.memory_per_node * self.nodes if self.memory_per_node else None,
                       nodes=self.nodes, node_cpus=self.cpus_per_node, node_gpus=self.gpus_per_node)

    def describe(self) -> str:
        if not self.gpus_per_node:
            mem = f", {self.memory_per_node / GiB:.0f} GiB" if self.memory_per_node else ""
            return f"{self.name}: {self.nodes} node(s) × {self.cpus_per_node} CPUs{mem}, no GPU"
        host = f"{self.memory_per_node / GiB:.0f} GiB" if self.memory_per_node else "unknown"
        return (f"{self.name}: {self.nodes} node(s) × {self.gpus_per_node} {self.gpu or 'GPU'} "
                f"({self.gpu_memory / GiB:.0f} GiB each), {self.cpus_per_node} CPUs and {host} host memory per node")


def parse_cluster(text: str) -> Cluster:
    """`--cluster`: a short name (see the module docstring), `local`, or a YAML file."""
    if text == "local":
        return local_cluster()
    m = NAME_RE.match(text.strip())
    if m:
        gpu = next((g for g in GPUS if g.lower() == m.group(3).lower()), None)
        if gpu is None:
            raise UserError(f"--cluster {text}: unknown GPU {m.group(3)!r}; known: {', '.join(GPUS)} (or describe "
                            "the cluster in a YAML file with gpu_memory)")
        nodes, per_node = int(m.group(1) or 1), int(m.group(2))
        return _gpu_cluster(text, nodes, per_node, gpu, GPUS[gpu] * GiB, None, None)
    path = Path(text)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return _from_yaml(path)
    raise UserError(f"--cluster {text!r}: expected NODESxGPUSxGPU (e.g. 8xA100-80GB, 2x8xH100-80GB), 'local', or a "
                    "YAML file")


def local_cluster() -> Cluster:
    m = Machine.detect()
    if m.gpus:
        return Cluster("local", 1, m.gpus, None, _local_gpu_memory(), m.cpus, m.memory)
    return Cluster("local", 1, 0, None, 0, m.cpus, m.memory)


def _local_gpu_memory() -> int:
    try:
        import torch

        return int(torch.cuda.get_device_properties(0).total_memory)
    except (ImportError, RuntimeError, AssertionError):
        return 0


def _gpu_cluster(name: str, nodes: int, per_node: int, gpu: str | None, memory: int,  # noqa: PLR0913
                 cpus: int | None, host: int | None) -> Cluster:
    return Cluster(name, nodes, per_node, gpu, memory, cpus or CPUS_PER_GPU * max(1, per_node),
                   host or HOST_GIB_PER_GPU * max(1, per_node) * GiB)


_YAML_KEYS = {"name", "nodes", "gpus_per_node", "gpu", "gpu_memory", "cpus_per_node", "memory_per_node"}


def _from_yaml(path: Path) -> Cluster:
    where = f"--cluster {path}"
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"{where}: cannot read it ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise UserError(f"{where}: invalid YAML: {e}") from None
    if not isinstance(raw, dict) or set(raw) - _YAML_KEYS:
        extra = ", ".join(sorted(set(raw) - _YAML_KEYS)) if isinstance(raw, dict) else "not a mapping"
        raise UserError(f"{where}: unknown field(s) {extra}; expected {', '.join(sorted(_YAML_KEYS))}")
    try:
        nodes, per_node = int(raw.get("nodes", 1)), int(raw.get("gpus_per_node", 0))
        gpu = raw.get("gpu")
        if gpu is not None and gpu not in GPUS:
            raise ValueError(f"gpu {gpu!r} is not one of {', '.join(GPUS)}; give gpu_memory instead")
        memory = parse_memory(raw["gpu_memory"]) if "gpu_memory" in raw else GPUS[gpu] * GiB if gpu else 0
        if per_node and not memory:
            raise ValueError("gpus_per_node needs gpu (a known GPU) or gpu_memory (e.g. 80GB)")
        cpus = int(raw["cpus_per_node"]) if "cpus_per_node" in raw else None
        host = parse_memory(raw["memory_per_node"]) if "memory_per_node" in raw else None
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: {e}") from None
    if nodes < 1 or per_node < 0:
        raise UserError(f"{where}: nodes must be ≥ 1 and gpus_per_node ≥ 0")
    name = str(raw.get("name") or path.stem)
    if per_node == 0:
        return Cluster(name, nodes, 0, None, 0, cpus or 1, host)
    return _gpu_cluster(name, nodes, per_node, gpu, memory, cpus, host)
