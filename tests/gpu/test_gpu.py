"""GPU-only checks (skipped without CUDA, with the reason; `scripts/gpu_check.sh` runs them where a GPU is): the
training stages on a GPU follow their CPU loss curve, bf16 autocast trains on CUDA, two GPUs train data-parallel
over NCCL, and the memory model is close to what CUDA allocates."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU: scripts/gpu_check.sh runs these on a machine that has one")
GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0


def sft(out, model, data, devices: str, **params):
    """The sft stage in its own process on CUDA_VISIBLE_DEVICES=devices ('' = CPU); its per-step losses."""
    events = out.with_name(out.name + ".events.jsonl")
    code = ("import json, sys; from alignpipe.pipeline.entry import execute, manual_task; "
            f"t = manual_task('sft', {{'model': {str(model)!r}, 'data': {str(data)!r}}}, {params!r}, {str(out)!r}, 0);"
            f" execute(t.model_copy(update={{'events': {str(events)!r}}}))")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": devices})
    rows = [json.loads(line) for line in events.read_text().splitlines()]
    return [r["values"]["loss"] for r in rows if r["type"] == "metrics" and "loss" in r["values"]]


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    from alignpipe.task import make_demonstrations

    path = tmp_path_factory.mktemp("gpu") / "demos.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in make_demonstrations(0, 200)))
    return path


def test_sft_on_a_gpu_follows_the_cpu_curve(tiny_model_dirs, demos, tmp_path):
    cpu = sft(tmp_path / "cpu", tiny_model_dirs["gpt2"], demos, "", steps=20, batch_size=8)
    gpu = sft(tmp_path / "gpu", tiny_model_dirs["gpt2"], demos, "0", steps=20, batch_size=8)
    assert max(abs(a - b) for a, b in zip(cpu, gpu, strict=True)) < 1e-3


def test_bf16_autocast_trains_on_cuda(tiny_model_dirs, demos, tmp_path):
    losses = sft(tmp_path / "bf16", tiny_model_dirs["llama"], demos, "0", steps=30, batch_size=8, precision="bf16",
                 lr=3e-3)
    assert losses[-1] < losses[0]


@pytest.mark.skipif(GPUS < 2, reason="needs two CUDA GPUs for NCCL between ranks")
def test_two_gpus_data_parallel_over_nccl(tiny_model_dirs, demos, tmp_path):
    import yaml

    spec = {"name": "g", "workspace": str(tmp_path / "ws"), "stages": {"sft": {
        "uses": "sft", "inputs": {"model": str(tiny_model_dirs["gpt2"]), "data": str(demos)},
        "params": {"steps": 20, "batch_size": 8}, "resources": {"procs_per_node": 2, "gpus": 1, "cpus": 1}}}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    r = subprocess.run([sys.executable, "-m", "alignpipe", "run", str(tmp_path / "p.yaml"), "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    log = next((tmp_path / "ws" / "logs").glob("*/sft-1.log")).read_text()
    assert "launched 2 ranks" in log


def test_the_memory_model_is_close_to_what_cuda_allocates():
    from transformers import GPT2Config, GPT2LMHeadModel

    from alignpipe.distributed.memory import FP32, shape_from_config, trained

    cfg = GPT2Config(n_layer=6, n_embd=512, n_head=8, vocab_size=8192, n_positions=512, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    batch, seq = 8, 256
    torch.cuda.reset_peak_memory_stats()
    model = GPT2LMHeadModel(cfg).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device="cuda")
    for _ in range(2):  # the second step holds the Adam state too
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    measured = torch.cuda.max_memory_allocated()
    planned = trained(shape_from_config(cfg.to_dict()), "lm", FP32, tokens=batch * seq).total
    print(f"memory model {planned / 2**20:.0f} MiB, CUDA peak {measured / 2**20:.0f} MiB, "
          f"ratio {measured / planned:.2f}")
    assert 0.5 < measured / planned < 1.5
