"""Cluster descriptions: short names, YAML files, this machine; and what spec validation sees of them."""

import pytest

from alignpipe.distributed.cluster import parse_cluster
from alignpipe.distributed.memory import GiB
from alignpipe.pipeline.errors import UserError


@pytest.mark.parametrize("text,nodes,per_node,gpu,memory", [
    ("8xA100-80GB", 1, 8, "A100-80GB", 80), ("2x8xH100-80GB", 2, 8, "H100-80GB", 80),
    ("1xl4-24gb", 1, 1, "L4-24GB", 24),
], ids=["one-node", "two-nodes", "case-insensitive"])
def test_short_names(text, nodes, per_node, gpu, memory):
    c = parse_cluster(text)
    assert (c.nodes, c.gpus_per_node, c.gpu, c.gpu_memory) == (nodes, per_node, gpu, memory * GiB)
    assert c.cpus_per_node == 12 * per_node and c.memory_per_node == 144 * per_node * GiB
    m = c.machine()
    assert (m.nodes, m.gpus, m.node_gpus) == (nodes, nodes * per_node, per_node)


def test_yaml_description(tmp_path):
    f = tmp_path / "lab.yaml"
    f.write_text("nodes: 2\ngpus_per_node: 4\ngpu_memory: 48GB\ncpus_per_node: 64\nmemory_per_node: 512GB\n")
    c = parse_cluster(str(f))
    assert (c.name, c.nodes, c.gpus_per_node, c.gpu_memory, c.cpus_per_node, c.memory_per_node) == \
        ("lab", 2, 4, 48 * GiB, 64, 512 * GiB)


def test_cpu_only_yaml(tmp_path):
    f = tmp_path / "cpus.yaml"
    f.write_text("nodes: 3\ncpus_per_node: 16\nmemory_per_node: 64GB\n")
    c = parse_cluster(str(f))
    assert (c.gpus_per_node, c.machine().cpus, c.machine().node_cpus) == (0, 48, 16)


def test_local_is_this_machine():
    import os

    c = parse_cluster("local")
    assert c.nodes == 1 and c.cpus_per_node == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("text,content,match", [
    ("8xB300-288GB", None, r"unknown GPU 'B300-288GB'; known: A100-40GB"),
    ("eight gpus", None, r"expected NODESxGPUSxGPU \(e.g. 8xA100-80GB"),
    ("c.yaml", "nodes: 1\ngpus: 8\n", r"unknown field\(s\) gpus; expected"),
    ("c.yaml", "gpus_per_node: 8\n", r"gpus_per_node needs gpu \(a known GPU\) or gpu_memory"),
    ("c.yaml", "gpus_per_node: 8\ngpu: TPU\n", r"gpu 'TPU' is not one of"),
    ("c.yaml", "nodes: [", r"invalid YAML"),
], ids=["unknown-gpu", "not-a-name", "unknown-field", "no-gpu-memory", "unknown-gpu-yaml", "bad-yaml"])
def test_bad_descriptions(tmp_path, text, content, match):
    if content is not None:
        (tmp_path / text).write_text(content)
        text = str(tmp_path / text)
    with pytest.raises(UserError, match=match):
        parse_cluster(text)


def test_a_process_must_fit_one_node_of_a_cluster():
    from alignpipe.pipeline.spec import Machine, Resources

    two_small = Machine(cpus=2, gpus=2, memory=None, nodes=2, node_cpus=1, node_gpus=1)
    assert two_small.check(Resources(cpus=2), "s.resources") == ["s.resources.cpus: asks for 2 CPUs but the cluster's "
                                                                 "largest node has 1 (a process runs on one node); "
                                                                 "lower it"]
    assert "s.resources.gpus: asks for 2 GPU(s) but the cluster's largest node has 1" in two_small.check(
        Resources(cpus=1, gpus=2), "s.resources")[0]
    assert two_small.check(Resources(cpus=1, gpus=1), "s.resources") == []
    assert Machine(cpus=2, gpus=0, memory=None).check(Resources(cpus=2), "s") == []  # one machine: its own check
