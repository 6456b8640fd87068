"""`alignpipe plan`: sizes followed through the graph, a plan per stage, refusals that name the stage and the
shortfall (exit 2), and the spec checked against the cluster it is planned for."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alignpipe import api
from alignpipe.distributed.cluster import parse_cluster
from alignpipe.distributed.plan import plan_pipeline

REPO = Path(__file__).resolve().parents[2]
SEVEN_B = REPO / "docs" / "examples" / "rlhf-7b.yaml"


def plan_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "alignpipe", "plan", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def by_stage(plans):
    return {p.stage: p for p in plans}


def test_7b_pipeline_on_8_a100():
    cluster = parse_cluster("8xA100-80GB")
    plans = by_stage(plan_pipeline(api.load(SEVEN_B, machine=cluster.machine()), cluster))
    assert plans["sft"].plan.describe() == "FSDP over 8"
    assert plans["reward"].plan.describe() == "FSDP over 8 + activation checkpointing"
    assert plans["ppo"].plan.describe() == ("colocated: actor+critic+reference+reward_model on 8 devices, "
                                            "sharded over 8")
    assert plans["ppo"].plan.sizes == {"actor": 6_738_415_616, "critic": 6_607_347_712,
                                       "reference": 6_738_415_616, "reward_model": 6_607_347_712}
    assert plans["data"].note == "no model to place" and not any(p.refused for p in plans.values())


def test_cli_prints_the_memory_model_and_json(tmp_path):
    r = plan_cli(SEVEN_B, "--cluster", "8xA100-80GB")
    assert r.returncode == 0, r.stderr
    assert "plan:    colocated: actor+critic+reference+reward_model on 8 devices, sharded over 8" in r.stdout
    assert "GiB per device" in r.stdout and "KV cache" in r.stdout
    r = plan_cli(SEVEN_B, "--cluster", "8xA100-80GB", "--json")
    ppo = next(p for p in json.loads(r.stdout)["plans"]["None"] if p["stage"] == "ppo")["plan"]
    assert ppo["layout"] == "colocated" and ppo["replicas"] == 8 and ppo["groups"][0]["shard"] == 8


def test_sizes_follow_the_graph_from_pretrain_params():
    from alignpipe.distributed.memory import shape_from_pretrain

    pipe = api.load(None)
    plans = by_stage(plan_pipeline(pipe, parse_cluster("local")))
    base = shape_from_pretrain(pipe.stages["base"].params)
    assert plans["sft"].plan.model.params == base.params()
    assert plans["ppo"].plan.sizes["reward_model"] == base.params("scalar")
    assert plans["ppo"].plan.layout == "colocated"


def test_a_spec_that_cannot_fit_is_refused_naming_stage_and_shortfall():
    r = plan_cli(SEVEN_B, "--cluster", "8xA100-80GB", "--model", "70B")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "stage 'ppo': PPO's models (actor 69.0B" in r.stderr and "GiB short" in r.stderr


def test_a_table_of_sizes_shows_refusals_and_exits_0():
    r = plan_cli(SEVEN_B, "--cluster", "8xA100-80GB", "--model", "125M,70B")
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if "│ ppo" in line]
    assert "colocated" in rows[0] and "refused" in rows[1]


def test_the_spec_is_validated_against_the_cluster():
    r = plan_cli(SEVEN_B, "--cluster", "1xL4-24GB")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert ("stages.sft.resources.procs_per_node: 8 processes × 1 GPUs need 8 GPUs on a node, which has 1; lower "
            "procs_per_node or gpus") in r.stderr


def test_unknown_sizes_ask_for_model(tmp_path):
    spec = yaml.safe_load(SEVEN_B.read_text())
    spec["stages"]["sft"]["inputs"]["model"] = "hf:someone/unknown-model"
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    r = plan_cli(tmp_path / "p.yaml", "--cluster", "8xA100-80GB")
    assert r.returncode == 0
    assert "not planned: stage 'sft' input 'model' (hf:someone/unknown-model): the plan cannot tell its size; give " \
           "--model SIZE" in r.stdout
    r = plan_cli(tmp_path / "p.yaml", "--cluster", "8xA100-80GB", "--model", "7B")
    assert "FSDP over 8" in r.stdout


@pytest.mark.parametrize("args,match", [
    (["--cluster", "8xZ80-80GB"], "--cluster 8xZ80-80GB: unknown GPU 'Z80-80GB'"),
    (["--cluster", "8xA100-80GB", "--model", "8B"], "--model: unknown model size '8B'"),
    (["--precision", "fp8"], "--precision 'fp8': expected bf16 or fp32"),
], ids=["gpu", "model", "precision"])
def test_bad_options(args, match):
    r = plan_cli(SEVEN_B, *args)
    assert r.returncode == 2 and match in r.stderr and "Traceback" not in r.stderr
