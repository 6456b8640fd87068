"""The ppo stage on tiny models: PPO.md's whole-trainer oracles at the stage level, resume, learning, refusals.

The PPO math itself (GAE, losses, KL control, the analytic bandit) is tested in tests/rl; here the stage's
wiring: what the trainer sees at step 0 and at lr = 0, that the reference never moves, that a kill -9 changes
nothing, that it learns, and what it refuses before any compute.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from stage_util import manifest

from alignpipe import api
from alignpipe.pipeline.errors import StageFailed

TARGET = "!"  # a byte token of the tiny tokenizer; `target_fraction` rewards emitting it
LEARN_TOKENS = 8


# -- reward / gold functions the stage imports as "test_ppo:<name>" --------------------------------------------------
def target_fraction(responses):
    """Fraction of the response that is the target token (count of '!' over the response length cap)."""
    return [r.count(TARGET) / LEARN_TOKENS for r in responses]


def text_length(responses, prompts):
    return [float(len(r)) for r in responses]


def nan_reward(responses):
    return [float("nan")] * len(responses)




# -- fixtures ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fx(tiny_model_dirs, tiny_tokenizer, tmp_path_factory) -> dict[str, Path]:
    """πSFT stand-ins (the tiny random gpt2/llama), a reward model on the gpt2 backbone with a recorded
    normalization, and 64 prompts."""
    from alignpipe.models.build import reward_model_from_causal, save_model, set_reward_normalization
    from alignpipe.task import make_prompts

    root = tmp_path_factory.mktemp("ppo_fx")
    rm = reward_model_from_causal(tiny_model_dirs["gpt2"])
    set_reward_normalization(rm, bias=0.1, gain=2.0)
    save_model(rm, tiny_tokenizer, root / "rm")
    (root / "prompts").mkdir()
    (root / "prompts" / "data.jsonl").write_text(
        "".join(json.dumps({"prompt": q}) + "\n" for q in make_prompts(0, 64, "rl")))
    return {"gpt2": tiny_model_dirs["gpt2"], "llama": tiny_model_dirs["llama"], "rm": root / "rm",
            "prompts": root / "prompts"}


SMALL = {"rollouts": 2, "batch_size": 8, "minibatch_size": 4, "ppo_epochs": 2, "max_new_tokens": 8,
         "checkpoint_every": 100}


def run_ppo(out: Path, fx, arch: str = "gpt2", reward_model: bool = True, seed: int = 0, **params):
    inputs = {"policy": str(fx[arch]), "prompts": str(fx["prompts"])}
    if reward_model:
        inputs["reward_model"] = str(fx["rm"])
    api.run_stage("ppo", inputs=inputs, params={**SMALL, **params}, out=out, seed=seed)
    return out



def weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


class Spy:
    """Records what the stage hands to the PPO core: every Rollout (with its batch) and every update's steps."""

    def __init__(self, monkeypatch):
        import alignpipe.rl.ppo as core
        import alignpipe.stages.ppo as stage

        self.sampled, self.updates, self.advantages = [], [], []
        real_rollout, real_update, real_adv = stage.rollout, core.ppo_update, core.compute_advantages

        def rollout(*a, **k):
            self.sampled.append(real_rollout(*a, **k))
            return self.sampled[-1]

        def compute_advantages(r, beta, cfg):
            self.advantages.append(real_adv(r, beta, cfg))
            return self.advantages[-1]

        def ppo_update(*a, **k):
            self.updates.append(real_update(*a, **k))
            return self.updates[-1]

        monkeypatch.setattr(stage, "rollout", rollout)
        monkeypatch.setattr(core, "ppo_update", ppo_update)
        monkeypatch.setattr(core, "compute_advantages", compute_advantages)


# -- params and spec-time checks -----------------------------------------------------------------------------------
def test_ppo_params_are_the_core_config_plus_stage_fields():
    from alignpipe.rl.config import PPOConfig
    from alignpipe.stages.ppo import Params

    assert issubclass(Params, PPOConfig)
    departures = {"minibatch_size": 8, "max_grad_norm": 1.0}  # documented stage defaults
    for name in PPOConfig.model_fields:
        assert Params.model_fields[name].default == departures.get(name, PPOConfig.model_fields[name].default), name
    with pytest.raises(ValueError, match="extra"):
        Params(clip_epsilon=0.1)


@pytest.mark.parametrize(("params", "inputs", "field"), [
    ({}, {"policy", "prompts"}, "inputs.reward_model"),
    ({"reward_function": "m:f"}, {"policy", "prompts", "reward_model"}, "inputs.reward_model"),
    ({"batch_size": 12, "minibatch_size": 8}, {"policy", "prompts", "reward_model"}, "params.minibatch_size"),
    ({"minibatch_size": 8, "micro_batch_size": 3}, {"policy", "prompts", "reward_model"}, "params.micro_batch_size"),
    ({"critic": "shared"}, {"policy", "prompts", "reward_model", "critic_init"}, "inputs.critic_init"),
    ({"kl_control": "fixed", "kl_target": 3.0}, {"policy", "prompts", "reward_model"}, "params.kl_target"),
    ({"kl_control": "adaptive", "beta": 0.0}, {"policy", "prompts", "reward_model"}, "params.beta"),
    ({"vf_coef": 0.5}, {"policy", "prompts", "reward_model"}, "params.vf_coef"),
    ({"lora_r": 4}, {"policy", "prompts", "reward_model"}, "params.lora_r"),
], ids=["no-reward", "two-rewards", "minibatch", "micro-batch", "shared-with-critic-init", "fixed-with-target",
        "adaptive-beta-0", "vf-coef-separate", "lora-r-without-lora"])
def test_check_rejects_inconsistent_settings(params, inputs, field):
    from alignpipe.stages.ppo import STAGE

    problems = STAGE.check(STAGE.parse_params(params), inputs)
    assert len(problems) == 1 and problems[0].startswith(field + ":"), problems


def test_tokenizer_mismatch_is_refused_before_compute_naming_both_artifacts(fx, tiny_model_dirs, tmp_path):
    from alignpipe.models.build import LMSpec, build_causal_lm, reward_model_from_causal, save_model
    from alignpipe.models.tokenizer import train_tokenizer

    other = train_tokenizer(["a completely different corpus of words"] * 50 + ["zebra yak xylophone"] * 50,
                            vocab_size=300)
    lm = save_model(build_causal_lm(LMSpec(n_layer=1, hidden=16, n_head=2, max_positions=64), other, seed=0), other,
                    tmp_path / "other_lm")
    save_model(reward_model_from_causal(lm), other, tmp_path / "other_rm")
    with pytest.raises(StageFailed, match=r"tokenizers of \"input 'policy' \(external input [0-9a-f]{12} at .*gpt2\)"
                                          r"\" and \"input 'reward_model' \(external input [0-9a-f]{12} at "
                                          r".*other_rm\)\" are incompatible: .*vocabulary"):
        api.run_stage("ppo", inputs={"policy": str(fx["gpt2"]), "prompts": str(fx["prompts"]),
                                     "reward_model": str(tmp_path / "other_rm")}, params=SMALL, out=tmp_path / "out")
    assert not list((tmp_path / "out.work").glob("*/ckpt"))


def test_too_few_prompts_and_nan_rewards_fail_cleanly(fx, tmp_path):
    with pytest.raises(StageFailed, match="64 usable prompts, fewer than batch_size 128"):
        run_ppo(tmp_path / "a", fx, batch_size=128, minibatch_size=None)
    with pytest.raises(StageFailed, match="rollout 1 score is NaN at step 1; stopped before the optimizer"):
        run_ppo(tmp_path / "b", fx, reward_model=False, reward_function="test_ppo:nan_reward")


# -- PPO.md whole-trainer oracles ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("arch", "extra"), [
    ("gpt2", {}), ("llama", {}), ("gpt2", {"lora": True, "critic": "shared"}),
], ids=["gpt2", "llama", "gpt2-lora-shared-critic"])
def test_lr_zero_changes_nothing_kl_zero_ratio_one(fx, tmp_path, monkeypatch, arch, extra):
    spy = Spy(monkeypatch)
    out = run_ppo(tmp_path / "out", fx, arch=arch, lr=0.0, **extra)
    assert len(spy.sampled) == len(spy.updates) == 2
    for sampled, update in zip(spy.sampled, spy.updates, strict=True):
        r = sampled.rollout
        assert torch.equal(r.logprobs_old[r.response_mask], r.ref_logprobs[r.response_mask])  # KL exactly 0
        assert len(update.steps) == 2 * 2  # ppo_epochs × minibatches, each with ratio ≡ 1
        for step in update.steps:
            assert abs(step["ratio_min"] - 1) <= 1e-6 and abs(step["ratio_max"] - 1) <= 1e-6, step
            assert step["clipfrac"] == 0.0 and step["approx_kl"] <= 1e-12, step
    assert manifest(out / "policy")["summary"]["curve"]["kl"] == [0.0, 0.0]
    sft, policy = weights(fx[arch]), weights(out / "policy")
    assert sft.keys() == policy.keys() and all(torch.equal(sft[k], policy[k]) for k in sft)
    value = weights(out / "value")
    if extra.get("critic") == "shared":
        assert not value["score.weight"].any()  # the zero-init head stayed zero
    else:
        rm = weights(fx["rm"])
        assert rm.keys() == value.keys() and all(torch.equal(rm[k], value[k]) for k in rm)


def test_step_zero_kl_is_exactly_zero_then_the_policy_moves_and_the_reference_does_not(fx, tmp_path, monkeypatch):
    from alignpipe.models.build import load_causal_lm
    from alignpipe.models.forward import response_logprobs

    spy = Spy(monkeypatch)
    out = run_ppo(tmp_path / "out", fx, lr=1e-2, kl_control="fixed", beta=0.05)
    first, second = spy.sampled
    m = first.rollout.response_mask
    assert torch.equal(first.rollout.logprobs_old[m], first.rollout.ref_logprobs[m])
    assert manifest(out / "policy")["summary"]["curve"]["kl"][0] == 0.0
    for update in spy.updates:  # the first minibatch of every rollout runs the policy that sampled it
        assert abs(update.steps[0]["ratio_min"] - 1) <= 1e-6 and abs(update.steps[0]["ratio_max"] - 1) <= 1e-6
    sft = load_causal_lm(fx["gpt2"])
    b, m = second.batch, second.rollout.response_mask
    with torch.no_grad():
        sft_logprobs, _ = response_logprobs(sft, b.input_ids, b.attention_mask, b.prompt_len, 0.7)
    torch.testing.assert_close(second.rollout.ref_logprobs[m], sft_logprobs[m], atol=1e-6, rtol=0)
    assert (second.rollout.logprobs_old[m] - sft_logprobs[m]).abs().max() > 1e-3  # the policy did move
    before, after = weights(fx["gpt2"]), weights(out / "policy")
    assert any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("critic", ["separate", "shared"])
def test_single_pass_reuses_the_update_forward_for_the_old_logprobs_and_trains_as_with_a_recompute(
        fx, tmp_path, monkeypatch, critic):
    import alignpipe.rl.ppo as core
    import alignpipe.stages.ppo as stage

    calls = []
    real_forward = stage.training_forward

    def counting_forward(*a, **k):
        calls.append(torch.is_grad_enabled())
        return real_forward(*a, **k)

    monkeypatch.setattr(stage, "training_forward", counting_forward)
    one_step = {"ppo_epochs": 1, "minibatch_size": None, "lr": 1e-2, "kl_control": "fixed", "beta": 0.05,
                "critic": critic}
    spy = Spy(monkeypatch)
    fused = run_ppo(tmp_path / "fused", fx, **one_step)
    assert calls == [True, True]  # one forward per rollout (8 rows: one length chunk), with grad: no recompute
    for sampled, update in zip(spy.sampled, spy.updates, strict=True):
        (step,) = update.steps
        assert step["ratio_min"] == step["ratio_max"] == 1.0  # the very same forward: exactly 1
        assert sampled.current is None  # taken by the update
    assert manifest(fused / "policy")["summary"]["curve"]["kl"][1] != 0  # the policy moved between rollouts

    calls.clear()
    monkeypatch.setattr(core, "single_pass", lambda cfg, batch_size: False)
    recomputed = run_ppo(tmp_path / "recomputed", fx, **one_step)
    assert calls == [False, True, False, True]  # the no-grad recompute, then the update's forward
    for name in ("policy", "value"):
        a, b = weights(fused / name), weights(recomputed / name)
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=0, msg=f"{name} {k}")
    curves = [manifest(d / "policy")["summary"]["curve"] for d in (fused, recomputed)]
    assert curves[0]["kl"] == pytest.approx(curves[1]["kl"], abs=1e-4)
    assert curves[0]["score"] == pytest.approx(curves[1]["score"], abs=1e-4)


def test_kill_9_then_rerun_gives_the_uninterrupted_artifacts(fx, tmp_path):
    params = {**SMALL, "rollouts": 12, "checkpoint_every": 3, "lr": 3e-3, "kl_control": "adaptive",
              "kl_target": 0.01, "kl_horizon": 100.0}
    whole = run_ppo(tmp_path / "whole", fx, **params)
    betas = manifest(whole / "policy")["summary"]["curve"]["beta"]
    assert betas[-1] != betas[0]  # the controller moved β: its state must survive the kill

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "alignpipe", "stage", "run", "ppo", "-i", f"policy={fx['gpt2']}",
           "-i", f"reward_model={fx['rm']}", "-i", f"prompts={fx['prompts']}", "-o", str(out),
           *[a for k, v in params.items() for a in ("-p", f"{k}={v}")]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "killed.work").glob("*/ckpt/step-*")):  # complete checkpoints only
        assert proc.poll() is None, "the stage ended before writing a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "policy").exists()  # interrupted mid-run: nothing published

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming from checkpoint step" in rerun.stderr
    for name in ("policy", "value"):
        assert manifest(out / name)["id"] == manifest(whole / name)["id"], name
    assert manifest(out / "policy")["summary"]["curve"] == manifest(whole / "policy")["summary"]["curve"]


@pytest.mark.parametrize("temperature", [0.7, 1.0], ids=["tau-0.7", "tau-1"])
def test_rollout_logprobs_are_the_samplers_distribution_and_rewards_sit_on_the_last_token(
        fx, tmp_path, monkeypatch, temperature):
    """Items 5-7 and 10-13 at the stage level: the recomputed log π_old is what the sampler drew from (logits / τ,
    top_k 0, top_p 1), S is Rφ's normalized score, and at step 0 (KL 0) the only reward is S — replaced by the
    no-EOS penalty for a cut response — on each row's last valid token."""
    from alignpipe.models.build import load_causal_lm, load_reward_model
    from alignpipe.models.build import load_tokenizer as load_tok
    from alignpipe.models.forward import sample_responses, score_sequences, use_fused_kernels
    from alignpipe.rl.rewards import end_index
    from alignpipe.train import sub_seed

    spy = Spy(monkeypatch)
    run_ppo(tmp_path / "out", fx, rollouts=1, temperature=temperature, kl_control="fixed", beta=0.05)
    (sampled,), (adv,) = spy.sampled, spy.advantages
    b, r = sampled.batch, sampled.rollout
    prompts = [row[m.bool()].tolist() for row, m in zip(b.prompt_ids, b.prompt_mask, strict=True)]
    policy = use_fused_kernels(load_causal_lm(fx["gpt2"]))  # as the stage loads it
    again = sample_responses(policy, load_tok(fx["gpt2"]), prompts, temperature=temperature, max_new_tokens=8,
                             seed=sub_seed(0, "rollout", 0), return_logprobs=True)
    assert torch.equal(again.response_ids, b.response_ids)  # the rollout's seed reproduces its samples
    m = r.response_mask
    torch.testing.assert_close(r.logprobs_old[m], again.sampler_logprobs[m], atol=1e-4, rtol=0)

    rm = use_fused_kernels(load_reward_model(fx["rm"]))  # as the stage loads it
    with torch.no_grad():
        raw = score_sequences(rm, b.input_ids, b.attention_mask)
    assert torch.equal(r.scores, 2.0 * (raw + 0.1))  # S = gain·(raw + bias), the normalization Rφ records
    t_end = end_index(m)
    rows = torch.arange(len(t_end))
    score = torch.where(r.eos_emitted, r.scores, torch.full_like(r.scores, -1.0))
    assert torch.equal(adv.rewards[rows, t_end], score)
    assert not adv.rewards.index_put((rows, t_end), torch.zeros_like(score)).any()
    assert not r.eos_emitted.all()  # a random 8-token policy rarely stops: the penalty was exercised


def test_every_update_logs_the_ppo_diagnostics(fx, tmp_path):
    from alignpipe.pipeline.context import InputArtifact, StageContext
    from alignpipe.stages.ppo import STAGE

    inputs = {"policy": fx["gpt2"], "reward_model": fx["rm"], "prompts": fx["prompts"]}
    ctx = StageContext(stage="ppo", uses="ppo", seed=0, params=STAGE.parse_params(
                           {**SMALL, "gold_function": "test_ppo:text_length"}),
                       inputs={n: InputArtifact(n, p, f"{i}" * 64) for i, (n, p) in enumerate(inputs.items())},
                       out_root=tmp_path / "out", work_dir=tmp_path / "work", output_kinds=dict(STAGE.outputs),
                       events_path=tmp_path / "events.jsonl")
    STAGE.run(ctx)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    metrics = [e for e in events if e["type"] == "metrics"]
    assert [e["step"] for e in metrics] == [1, 2]
    wanted = {"score", "kl", "beta", "entropy", "clipfrac", "approx_kl", "value_loss", "explained_variance",
              "response_length", "gold", "lr", "policy_loss", "eos_rate", "rollout_seconds"}
    assert wanted <= set(metrics[0]["values"]) and wanted <= set(metrics[1]["values"])
    assert ctx.summaries["policy"]["rollouts"] == 2 and ctx.summaries["policy"]["optimizer_steps"] == 2 * 2 * 2


# -- learning, options ---------------------------------------------------------------------------------------------
def test_ppo_learns_to_emit_the_rewarded_token(fx, tmp_path):
    out = run_ppo(tmp_path / "out", fx, reward_model=False, reward_function="test_ppo:target_fraction",
                  gold_function="test_ppo:text_length", rollouts=40, batch_size=32, minibatch_size=8, ppo_epochs=4,
                  max_new_tokens=LEARN_TOKENS, lr=1e-2, temperature=1.0, kl_control="fixed", beta=0.01,
                  no_eos_penalty=None)
    summary = manifest(out / "policy")["summary"]
    score = summary["curve"]["score"]
    assert max(score[:3]) < 0.05, score  # a random policy almost never emits it
    assert min(score[-5:]) > 0.8, score
    assert summary["kl"] > 1.0 and summary["critic_init"] == "policy"
    assert all(g is not None for g in summary["curve"]["gold"])
    assert summary["headline"].startswith("PPO: 40 rollouts × 32, score ")


def test_lora_policy_with_a_shared_value_head_saves_plain_hf_directories(fx, tmp_path):
    from alignpipe.models.build import load_causal_lm, load_reward_model, score_head

    out = run_ppo(tmp_path / "out", fx, lora=True, critic="shared", lr=1e-2)
    sft, policy = weights(fx["gpt2"]), weights(out / "policy")
    assert sft.keys() == policy.keys()  # merged: no adapter tensors
    assert torch.equal(sft["transformer.wte.weight"], policy["transformer.wte.weight"])  # not a LoRA target
    assert not torch.equal(sft["transformer.h.0.attn.c_attn.weight"], policy["transformer.h.0.attn.c_attn.weight"])
    load_causal_lm(out / "policy")
    value = load_reward_model(out / "value")
    assert score_head(value).weight.abs().sum() > 0  # the zero-init head learned
    backbone = {k.removeprefix("transformer."): v for k, v in policy.items() if k.startswith("transformer.")}
    assert all(torch.equal(backbone[k], v) for k, v in value.transformer.state_dict().items())
    assert manifest(out / "value")["summary"]["critic_init"] == "policy"


def test_a_policy_with_pad_equal_to_eos_gives_policy_and_separate_critic_the_same_pad(fx, pad_is_eos_model,
                                                                                       tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    out = run_ppo(tmp_path / "out", {**fx, "gpt2": pad_is_eos_model}, reward_model=False,
                  reward_function="test_ppo:target_fraction", rollouts=1)  # the critic starts from the policy
    for name in ("policy", "value"):
        tok = AutoTokenizer.from_pretrained(out / name)
        assert tok.pad_token_id == 2 != tok.eos_token_id
        assert AutoConfig.from_pretrained(out / name).pad_token_id == 2, name


def test_check_survives_the_params_round_trip_through_a_task_file():
    """The runner hands stages fully dumped params; defaults must not count as 'given'."""
    from alignpipe.stages.ppo import Params, check

    p = Params(rollouts=4)
    assert check(Params.model_validate(p.model_dump(mode="json")), {"policy", "prompts", "reward_model"}) == []
    assert check(Params(vf_coef=0.5), {"policy", "prompts", "reward_model"}) != []
