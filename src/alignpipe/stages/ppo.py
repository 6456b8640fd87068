"""ppo — RLHF with PPO (InstructGPT): πSFT → πRLHF, maximizing Rφ's score with a per-token KL penalty to πSFT.

Consumes
  `policy`        πSFT, a HF causal LM directory with its tokenizer: the initial policy AND the frozen reference
                  π_ref (on resume the reference is again πSFT as loaded from this artifact, never the policy).
  `reward_model`  Rφ, a reward stage's output (*ForSequenceClassification, num_labels=1, normalization recorded
                  in its config). Alternative: params.reward_function (exactly one of the two).
  `prompts`       {"prompt": str | conversation} records, a file or a dataset dir (task.reviews' rl_prompts).
  `critic_init`   optional, where the value model starts: a sequence classifier (e.g. an RM or a previous value
                  output) or a causal LM (its backbone gets a zero value head). Default: Rφ, else πSFT's backbone.
Produces
  `policy`        πRLHF, a plain HF directory (LoRA merged), tokenizer included.
  `value`         the trained value model, a *ForSequenceClassification directory; V = gain·(head + bias) with
                  the normalization recorded in its config (Rφ's when initialized from Rφ, else none).
Summary (on `policy`): final score, KL, β, gold (if configured), rollouts, optimizer steps, wall time, per-rollout
curves and a one-line `headline`.

Run alone:
    alignpipe stage run ppo -i policy=sft/ -i reward_model=rm/ -i prompts=data/rl_prompts -p rollouts=40 -o ppo/
    alignpipe stage run ppo -i policy=sft/ -i prompts=p.jsonl -p reward_function=mypkg.rewards:score -o ppo/
(outputs land in ppo/policy and ppo/value; checkpoints in ppo.work/<fingerprint>/ckpt, a rerun of the same
command resumes from the newest.)

Method (shared/PPO.md; the math lives in alignpipe.rl, this module drives it). Per rollout batch of
`batch_size` prompts (one response each; prompt order reshuffled every epoch, seeded, incomplete batches dropped):
  1. sample y ~ softmax(logits/τ), top_k=0, top_p=1, left-padded prompts (models.forward.sample_responses),
     seeded by (stage seed, rollout index);
  2. recompute with the training forward under no_grad, never reusing the sampler's scores: log π_old and V,
     log π_ref, each logits / τ with position ids from the mask; S = Rφ's normalized score at the last token
     (the EOS), or the reward function on the decoded text. With one optimizer step per rollout (ppo_epochs 1,
     minibatch_size = batch_size) log π_old and V are the update's own forward, detached (rl.ppo.single_pass);
  3. rl.ppo.compute_advantages: r_t = −β·kl_t plus S at T_end, S replaced by `no_eos_penalty` when the
     response has no EOS, GAE(γ, λ) returns, advantages whitened over valid tokens;
  4. rl.ppo.ppo_update: `ppo_epochs` epochs of shuffled minibatches, clipped policy and value losses;
  5. the KL controller sees the batch mean of Σ_t k1_t; both LRs decay linearly to 0 over the rollouts.
Valid tokens run through the first EOS by position (a sampled pad id before it is a real token). Every model has
dropout off; π_ref and Rφ are frozen (eval mode, requires_grad False, no_grad). Optimizer: Adam (torch AdamW with
weight decay 0), eps 1e-5 as OpenAI 2019 / N+ (PyTorch adds eps outside the sqrt). Losses are token-level means
over each minibatch (rl.losses). A reward or gold function is 'package.module:callable' taking the decoded
responses (and, with a second parameter, the prompts) and returning one float per response.
Checks before compute: policy, reference, reward model and critic share one tokenizer (vocab, special ids, chat
template); pad ≠ eos (a pad token is added and logged otherwise); an EOS exists; chat prompts have a chat
template; prompt + max_new_tokens fits every model (longer prompts are skipped and counted).
Resume: every `checkpoint_every` rollouts a checkpoint holds policy, critic (or value head), both optimizers and
schedulers, RNG states, the minibatch generator, the KL controller's β, the prompt order position and the curves.
On CPU the artifacts after any number of kill -9 are bit-identical to an uninterrupted run's.
Departures from InstructGPT: one response per prompt, no PPO-ptx pretraining term, a no-EOS penalty; the value
model reads through Rφ's normalization so V starts on the scale of S (value clipping at 0.2 assumes it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from alignpipe.pipeline.context import StageContext
from alignpipe.pipeline.errors import StageFailed
from alignpipe.pipeline.stagedef import InputDef, StageDef, StrictParams
from alignpipe.rl.config import PPOConfig
from alignpipe.stages import _common
from alignpipe.stages._params import LoraParams

MODEL_INPUTS = ("policy", "reward_model", "critic_init")  # exchange token ids: one tokenizer, one position limit
class Params(PPOConfig, LoraParams):
    """The PPO hyper-parameters of alignpipe.rl.config.PPOConfig (gamma, lam, clip_eps, ...) plus the stage's own."""

    model_config = StrictParams.model_config
    rollouts: int = Field(default=64, ge=1)
    """PPO iterations: rollout batches sampled, each followed by `ppo_epochs` epochs of minibatch updates"""
    batch_size: int = Field(default=32, ge=1)
    """prompts per rollout batch, one response each (at most the number of usable prompts)"""
    max_new_tokens: int = Field(default=48, ge=1)
    """response length cap in tokens; a response cut here has no EOS (see no_eos_penalty)"""
    temperature: float = Field(default=0.7, gt=0)
    """sampling temperature τ; rollout, reference and training logprobs all use logits / τ"""
    lr: float = Field(default=1e-4, ge=0)
    """policy learning rate (and the shared value head's), decayed linearly to 0 over the rollouts; 0 freezes"""
    critic_lr: float | None = Field(default=None, ge=0)
    """learning rate of the separate value model; null = lr"""
    adam_eps: float = Field(default=1e-5, gt=0)
    """Adam epsilon for both optimizers"""
    kl_control: Literal["fixed", "adaptive"] = "adaptive"
    """KL coefficient β: fixed, or Ziegler's proportional controller toward kl_target"""
    beta: float = Field(default=0.15, ge=0)
    """β, or its initial value when adaptive (OpenAI 2019: 0.15 adaptive; N+: 0.05 fixed)"""
    kl_target: float = Field(default=6.0, gt=0)
    """adaptive only: target KL(π‖π_ref) per response in nats (batch mean of Σ_t k1_t)"""
    kl_horizon: float = Field(default=10000.0, gt=0)
    """adaptive only: controller horizon in samples; β moves by at most 20%·batch_size/horizon per rollout"""
    minibatch_size: int | None = Field(default=8, ge=1)
    """samples per optimizer step, must divide batch_size; null = the whole rollout batch"""
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    """clip each optimizer's global gradient norm; null = no clipping"""
    reward_function: str | None = None
    """'package.module:callable' scoring decoded responses, used as S instead of a reward_model input"""
    gold_function: str | None = None
    """'package.module:callable' gold scorer, logged per rollout, never trained on (alignpipe.task:gold_score)"""
    max_skip_fraction: float = Field(default=0.01, ge=0, le=1)
    """fail if more prompt records are invalid or too long for prompt + max_new_tokens"""
    checkpoint_every: int = Field(default=10, ge=1)
    """rollouts between checkpoints"""


def check(p: Params, inputs: set[str]) -> list[str]:
    """Cross-field problems, found at spec time (and again by run() in manual mode)."""
    problems = []
    # "set" = differs from its default: params arrive fully dumped in a task file, so model_fields_set can't tell
    given = {k for k, f in type(p).model_fields.items() if getattr(p, k) != f.get_default(call_default_factory=True)}
    if ("reward_model" in inputs) == (p.reward_function is not None):
        problems.append("inputs.reward_model: give exactly one reward: an input 'reward_model' (a reward stage's "
                        "output) or params.reward_function ('package.module:callable')")
    minibatch = p.minibatch_size or p.batch_size
    if p.batch_size % minibatch:
        problems.append(f"params.minibatch_size: {minibatch} does not divide batch_size {p.batch_size}; choose a "
                        "divisor so every sample is used once per epoch")
    if p.micro_batch_size and minibatch % p.micro_batch_size:
        problems.append(f"params.micro_batch_size: {p.micro_batch_size} does not divide minibatch_size {minibatch}")
    if p.kl_control == "adaptive" and p.beta == 0:
        problems.append("params.beta: the adaptive KL controller needs beta > 0 (it scales β multiplicatively)")
    if p.kl_control == "fixed" and given & {"kl_target", "kl_horizon"}:
        problems.append("params.kl_target: kl_target and kl_horizon only apply with kl_control: adaptive")
    if p.critic == "shared":
        if "critic_init" in inputs:
            problems.append("inputs.critic_init: critic 'shared' puts a zero-init value head on the policy; "
                            "drop critic_init or use critic: separate")
        if "critic_lr" in given:
            problems.append("params.critic_lr: critic 'shared' trains the value head with the policy at params.lr")
    elif "vf_coef" in given:
        problems.append("params.vf_coef: only critic 'shared' mixes the value loss into the policy loss")
    if not p.lora and given & {"lora_r", "lora_alpha"}:
        problems.append("params.lora_r: lora_r and lora_alpha only apply with lora: true")
    return problems


def models(p: Params, inputs: set[str]) -> tuple[str, ...]:
    """The models a run holds (resources.placement names them): a separate critic unless critic is shared (a value
    head on the actor), a reward model unless params.reward_function scores."""
    return ("actor", *(("critic",) if p.critic == "separate" else ()), "reference",
            *(("reward_model",) if "reward_model" in inputs else ()))


# ---------------------------------------------------------------------------------------------------------------
# helpers

ScoreFn = Callable[[list[str], list[Any]], list[float]]


@dataclass
class PPOModels:
    """What a rollout and an update touch; dropout is off in all of them (models.build loads them so)."""

    tokenizer: Any
    policy: Any  # π_θ, trainable (LoRA-wrapped when params.lora); None in a critic's own rank
    reference: Any  # π_ref: a frozen copy of πSFT as loaded from the `policy` artifact
    critic: Any | None  # critic=separate: the value model (None in the trainer when it trains in a rank of its own)
    value_head: Any | None  # critic=shared: Linear(d, 1, bias=False) on the policy's last hidden state
    critic_source: str  # which input the value model started from

    def train(self, mode: bool = True) -> None:
        for m in (self.policy, self.critic, self.value_head):
            if m is not None:
                m.train(mode)


@dataclass
class Sampled:
    """One rollout batch: tokens, texts, and what PPO needs (rl.ppo.Rollout)."""

    batch: Any  # models.forward.PromptResponseBatch
    texts: list[str]  # decoded responses (special tokens dropped)
    rollout: Any  # rl.ppo.Rollout
    gold: float | None  # mean gold score, if a gold function is configured
    current: tuple | None = None  # single pass (rl.ppo.single_pass): the update's forward over every row, with grad

    def forward_fn(self, m: PPOModels, temperature: float) -> Callable[[Any], tuple[Any, Any, Any]]:
        """rl.ppo's forward_fn: rows idx (b,) of this batch through `training_forward`, with grad.

        Rows of similar length go through the models together, each chunk cut to the columns it uses
        (PromptResponseBatch.select and map_by_length: valid response tokens are a prefix of each row, PPO.md
        item 10; all-pad leading prompt columns are dropped); the outputs are zero-padded back to (b, T), where
        the response mask is 0 anyway. In a single pass the first call returns the rollout's own forward.
        """
        import torch.nn.functional as F

        width = self.batch.response_ids.shape[1]  # T

        def forward(idx: Any) -> tuple[Any, Any, Any]:
            if self.current is not None:  # taken once: a later call runs the (by then updated) models again
                current, self.current = self.current, None
                return tuple(None if x is None else x[idx] for x in current)
            out = forward_by_length(m, self.batch.select(idx), temperature)
            return tuple(None if x is None else F.pad(x, (0, width - x.shape[1])) for x in out)  # (b, T) each

        return forward


def forward_by_length(m: PPOModels, batch: Any, temperature: float, entropy: bool = True) -> tuple[Any, ...]:
    """`training_forward` over a PromptResponseBatch in chunks of rows of similar length (map_by_length):
    (logprobs, values[, entropy]), each (B, T), None for what the models held here do not compute."""
    held = (m.policy is not None, m.critic is not None or m.value_head is not None, m.policy is not None)
    held = held if entropy else held[:2]

    def fn(sub: Any) -> tuple[Any, ...]:
        out = training_forward(m, sub.input_ids, sub.attention_mask, sub.prompt_len, temperature, entropy)
        return tuple(x for x, h in zip(out, held, strict=False) if h)

    computed = iter(batch.map_by_length(fn))
    return tuple(next(computed) if h else None for h in held)


def training_forward(  # noqa: PLR0913 — the forward's inputs plus a switch
    m: PPOModels, ids: Any, mask: Any, prompt_len: int, temperature: float, entropy: bool = True
) -> tuple[Any, Any, Any]:
    """The one forward of rollout recompute and PPO updates: ids, mask (b, P + T) -> logprobs, values, entropy (b, T).

    Logprobs under softmax(logits/τ) with position ids from the mask; values V_t before token t from the same
    columns, through the critic's recorded normalization (separate) or the value head on the policy (shared).
    entropy=False (the rollout recompute) returns None for it and skips its (b, T, V) pass. A part whose model is
    in another rank (the critic's, or the policy's seen from the critic's rank) is None.
    """
    from alignpipe.models.build import normalized_scores
    from alignpipe.models.forward import lm_head_pre_hook, response_logprobs, value_sequences

    if m.value_head is None:
        logprobs, ent, values = None, None, None
        if m.policy is not None:
            logprobs, ent = response_logprobs(m.policy, ids, mask, prompt_len, temperature, entropy)  # (b, T) each
        if m.critic is not None:
            values = normalized_scores(m.critic, value_sequences(m.critic, ids, mask, prompt_len))  # (b, T)
        return logprobs, values, ent
    hidden: list = []  # what the LM head sees: the final hidden states of the logit columns, (b, T + 1, d)
    with lm_head_pre_hook(m.policy, lambda _m, args: hidden.append(args[0])):
        logprobs, ent = response_logprobs(m.policy, ids, mask, prompt_len, temperature, entropy)
    values = m.value_head(hidden[0][:, :-1]).squeeze(-1).float()  # (b, T): columns P−1 … L−2, as the logprobs
    return logprobs, values, ent


def _load_critic(ctx: StageContext, policy: Any, tokenizer: Any) -> tuple[Any | None, Any | None, str]:
    """(separate critic, shared value head, source input name); a separate critic matches the (pad-fixed)
    tokenizer, as the policy does."""
    import torch

    from alignpipe.models.build import load_reward_model, reward_model_from_causal, score_head
    from alignpipe.models.forward import use_fused_kernels

    if ctx.params.critic == "shared":
        head = torch.nn.Linear(policy.config.hidden_size, 1, bias=False)
        torch.nn.init.zeros_(head.weight)
        return None, head, "policy"
    source = _critic_source(ctx)
    path = _common.model_dir(ctx, source)
    architectures = json.loads((path / "config.json").read_text()).get("architectures") or []
    try:
        if any(a.endswith("ForSequenceClassification") for a in architectures):
            critic = use_fused_kernels(load_reward_model(path, tokenizer))  # head and normalization included
        else:
            critic = use_fused_kernels(reward_model_from_causal(path, tokenizer))
            with torch.no_grad():
                score_head(critic).weight.zero_()  # V ≡ 0 at the start
    except ValueError as e:
        where = _common.describe(ctx, source)
        raise StageFailed(f"stage {ctx.stage!r} {where} cannot be a value model: {e}") from None
    return critic, None, source


def _critic_source(ctx: StageContext) -> str:
    """The input a separate value model starts from."""
    return next(n for n in ("critic_init", "reward_model", "policy") if n in ctx.inputs)


def _load_models(ctx: StageContext, tokenizer: Any, reference: bool = True, critic: bool = True) -> PPOModels:
    """Policy, frozen reference (a copy of πSFT taken before any checkpoint is restored; None when another process
    holds it), critic (None when another process trains it) or value head."""
    import copy

    from alignpipe.models.build import apply_lora

    p: Params = ctx.params
    policy = _load_policy(ctx, tokenizer)
    ref = copy.deepcopy(policy).eval().requires_grad_(False) if reference else None
    value, head, source = _load_critic(ctx, policy, tokenizer) if critic else (None, None, _critic_source(ctx))
    if p.lora:
        policy = apply_lora(policy, r=p.lora_r, alpha=p.lora_alpha)
    return PPOModels(tokenizer, policy, ref, value, head, source)


def _load_policy(ctx: StageContext, tokenizer: Any) -> Any:
    """πSFT from the `policy` input, its pad token fixed as the tokenizer's (the same in every process)."""
    from alignpipe.models.build import load_causal_lm
    from alignpipe.models.forward import use_fused_kernels

    policy = use_fused_kernels(load_causal_lm(_common.model_dir(ctx, "policy")))
    _common.fix_pad_token(ctx, "policy", tokenizer, policy)  # grows the embeddings if the pad token is new
    return policy


def _frozen(ctx: StageContext, tokenizer: Any, names: tuple[str, ...], reference: Any = None) -> Any:
    """What the frozen models this process holds compute for a rollout batch, {name: f(batch, texts, prompts)}:
    'reference' the log π_ref of the response tokens (B, T); 'reward' the scores S (B,), from Rφ or the reward
    function (the trainer's, when there is no reward model)."""
    from alignpipe.models.forward import response_logprobs

    p: Params = ctx.params
    frozen = {}
    if "reference" in names:
        ref = reference if reference is not None else _load_policy(ctx, tokenizer).eval().requires_grad_(False)

        def logprobs(sub: Any) -> tuple[Any]:  # rows of similar length, only the columns they use
            return response_logprobs(ref, sub.input_ids, sub.attention_mask, sub.prompt_len, p.temperature,
                                     entropy=False)[:1]  # (b, t)

        frozen["reference"] = lambda batch, texts, prompts: batch.map_by_length(logprobs)[0]  # (B, T)
    if "reward_model" in names or ("actor" in names and p.reward_function is not None):
        frozen["reward"] = _reward(ctx)
    return frozen


def _placement(ctx: StageContext, world: Any) -> Any:
    """Where actor, critic, reference and reward model run (alignpipe.distributed.placement, .groups): the plan for
    this stage's processes and the models' sizes, and the rank of each model. Refusals fail the stage (exit 2)."""
    from alignpipe.distributed.groups import local_devices, roles
    from alignpipe.distributed.memory import FP32, shape_from_dir
    from alignpipe.distributed.placement import Model, PlanRefused, Workload, plan_ppo

    p: Params = ctx.params
    names = models(p, set(ctx.inputs))
    source = {"actor": "policy", "reference": "policy", "reward_model": "reward_model", "critic": _critic_source(ctx)}
    held = [Model(n, shape_from_dir(_common.model_dir(ctx, source[n])), "lm" if n in ("actor", "reference")
                  else "scalar", n in ("actor", "critic")) for n in names]
    work = Workload(p.batch_size, p.micro_batch_size or p.minibatch_size or p.batch_size,
                    held[0].shape.max_positions, generate=True)
    try:
        plan = plan_ppo(ctx.stage, held, local_devices(ctx.resources, world.size), work, FP32,
                        ctx.resources.get("placement"), ctx.resources.get("sharding", "auto"))
    except PlanRefused as e:
        raise StageFailed(str(e)) from None
    return plan, roles(plan, world.size, ctx.stage)


def _replicas(ctx: StageContext, world: Any, models_: PPOModels) -> Any:
    """Data-parallel replicas of the trainer (distributed.replicas) over the trainer ranks' `world` (a subgroup when
    other ranks hold frozen models), or None when there is one trainer; every replica starts from rank 0's
    weights."""
    from alignpipe.distributed.replicas import Replicas

    p: Params = ctx.params
    if world.size == 1:
        return None
    if p.batch_size < world.size:
        raise StageFailed(f"stage {ctx.stage!r}: params.batch_size {p.batch_size} gives some of the "
                          f"{world.size} actor replicas no prompt; raise batch_size to {world.size} or more, or run "
                          "fewer processes")
    replicas = Replicas.of(world, p.batch_size)
    replicas.replicate([x for x in (models_.policy, models_.critic, models_.value_head) if x is not None])
    return replicas


def _serve_critic(ctx: StageContext, world: Any, roles: Any, critics: Any) -> None:
    """The critic's own rank (distributed.groups): per rollout batch, V_old of its trainer's rows (and the scores of
    the frozen models it also holds); then the value half of the update, in step with the trainer's policy half
    (rl.ppo.Partner). With actor replicas the critic's ranks (`critics`, a subgroup) are replicas too: each takes its
    trainer's share of every minibatch and their gradients are summed among them (distributed.replicas)."""
    import torch

    from alignpipe.distributed.groups import Link, compute_frozen, critic_handlers, serve
    from alignpipe.models.build import save_model
    from alignpipe.rl.ppo import NonFiniteGradient, ppo_update, single_pass
    from alignpipe.train import Checkpointer

    p: Params = ctx.params
    names = roles.held_by(world.rank)
    tokenizer = _common.load_tokenizer(ctx, "policy")
    _common.fix_pad_token(ctx, "policy", tokenizer)
    critic, _, source = _load_critic(ctx, None, tokenizer)
    m = PPOModels(tokenizer, None, None, critic, None, source)
    optimizers, schedulers = _optimizers(m, p)
    frozen = _frozen(ctx, tokenizer, tuple(n for n in names if n != "critic"))
    replicas = _replicas(ctx, critics, m)  # or None: one actor, one critic
    trainer = roles.trainers_of(world.rank)[0]
    sampled: list[Sampled] = []  # the batch being scored and updated on (its single-pass forward, if any)

    one_pass = single_pass(p, p.batch_size)

    def score(request: tuple[Any, list[str], list[Any]]) -> dict[str, Any]:
        batch = request[0]
        out = compute_frozen(frozen, *request)
        m.train(one_pass)
        with torch.set_grad_enabled(one_pass):  # a single pass keeps the graph for the update
            current = forward_by_length(m, batch, p.temperature)  # (None, values, None): no policy here
        sampled[:] = [Sampled(batch, [], None, None, current if one_pass else None)]
        return {**out, "values": current[1].detach()}

    def update(request: tuple[Any, Any, Any], generator: Any) -> None:
        rollout_, advantages, returns = request
        m.train(True)
        forward = sampled[0].forward_fn(m, p.temperature)
        try:
            ppo_update(rollout_, advantages, returns, forward if replicas is None else replicas.local(forward), None,
                       optimizers["critic"], p, generator, replicas, partner=Link(world, trainer, first=False))
        except NonFiniteGradient:
            return  # the trainer saw the same norms: it fails the stage, naming them
        schedulers["critic"].step()

    ckpt = Checkpointer(ctx.checkpoints, models={"critic": critic}, optimizers=optimizers, schedulers=schedulers)
    handlers = {"score": score, **critic_handlers(ckpt, update, lambda d: save_model(critic, tokenizer, d))}
    served = serve(world, handlers, [trainer])
    ctx.log(f"scored {served} rollout batches with {', '.join(names)}, and trained the critic"
            + (f" (replica of trainer rank {trainer})" if replicas is not None else ""))
    world.close()


def _serve(ctx: StageContext, world: Any, roles: Any) -> None:
    """A process of frozen models: it loads them and scores its trainers' rollouts until they are done."""
    from alignpipe.distributed.groups import scorer, serve

    names, trainers = roles.held_by(world.rank), roles.trainers_of(world.rank)
    tokenizer = _common.load_tokenizer(ctx, "policy")
    _common.fix_pad_token(ctx, "policy", tokenizer)
    served = serve(world, scorer(_frozen(ctx, tokenizer, names)) if trainers else {}, trainers)
    whose = f" for trainer ranks {', '.join(map(str, trainers))}" if len(trainers) > 1 else ""
    ctx.log(f"scored {served} rollout batches with {', '.join(names)}{whose}" if trainers else
            f"holds {', '.join(names)} but serves no trainer: its group has more processes than the actor's")
    world.close()


def _reward(ctx: StageContext) -> Callable[[Any, list[str], list[Any]], Any]:
    """S of a rollout batch: (batch, texts, prompts) -> (B,) tensor, from Rφ (frozen) or the reward function."""
    import torch

    from alignpipe.models.scoring import RewardScorer

    fn = _common.score_function(ctx, "reward_function")
    if fn is not None:
        return lambda batch, texts, prompts: torch.tensor(fn(texts, prompts), dtype=torch.float32)
    scorer = RewardScorer(_common.model_dir(ctx, "reward_model"))
    scorer.model.requires_grad_(False)
    return lambda batch, texts, prompts: scorer.score_batch(batch)


def _check_tokenizers(ctx: StageContext, tokenizer: Any) -> None:
    """Policy (= reference), reward model and critic exchange token ids: one tokenizer, before any compute."""
    named = {"policy": tokenizer}
    for name in ("reward_model", "critic_init"):
        if name in ctx.inputs:
            named[name] = _common.load_tokenizer(ctx, name)
    _common.check_tokenizers(ctx, named)


def _prompt_ids(ctx: StageContext, tokenizer: Any, limit: int | None) -> tuple[list[tuple[Any, list[int]]], dict]:
    """(prompt, ids) pairs that fit prompt + max_new_tokens into every model, and the skip summary."""
    from alignpipe.data import parse_prompts

    p: Params = ctx.params
    prompts, parse_skips, source = _common.read_dataset(ctx, "prompts", parse_prompts,
                                                        max_skip_fraction=p.max_skip_fraction)
    _common.require_chat_template(ctx, tokenizer, "policy", "prompts", prompts)
    kept, len_skips = _common.fitting_prompts(ctx, tokenizer, prompts, limit=limit, max_new_tokens=p.max_new_tokens,
                                              source=str(source), max_skip_fraction=p.max_skip_fraction)
    if len(kept) < p.batch_size:
        raise StageFailed(f"stage {ctx.stage!r} {_common.describe(ctx, 'prompts')}: {len(kept)} usable prompts, "
                          f"fewer than batch_size {p.batch_size}; lower params.batch_size or give more prompts")
    return kept, _common.skip_summary(parse_skips, len_skips)


def _log_rollout(ctx: StageContext, r: int, p: Params, stats: dict[str, float]) -> None:
    if (r + 1) % p.checkpoint_every and r > 0:
        return
    gold = f", gold {stats['gold']:.3f}" if "gold" in stats else ""
    ctx.log(f"rollout {r + 1}/{p.rollouts}: score {stats['score']:.3f}, KL {stats['kl']:.3f}, β {stats['beta']:.4f}"
            f"{gold} ({stats['rollout_seconds']:.2f} s rollout, {stats['update_seconds']:.2f} s update)")


def rollout(  # noqa: PLR0913 — a rollout's models, prompts, scorers, params, seed and replicas
    m: PPOModels, chosen: list[tuple[Any, list[int]]], scoring: Any, gold: ScoreFn | None, p: Params, seed: int,
    replicas: Any = None,
) -> Sampled:
    """Sample one response per prompt, then recompute logprobs, values, reference logprobs and scores (no_grad).

    The frozen models (reference, reward) score through `scoring` (distributed.groups.Scoring): here, or in
    processes of their own while this one recomputes. In a single pass (rl.ppo.single_pass: one optimizer step
    per rollout) log π_old and V_old come, detached, from the update's own forward, run here over every row with
    grad and kept for forward_fn: the same weights and the same forward, one pass fewer. With data-parallel
    `replicas` (distributed.replicas) `chosen` is this rank's share of the batch: it is sampled as part of the
    global batch, and the Rollout and the gold mean returned are the global batch's."""
    import torch

    from alignpipe.models.forward import ALONE, sample_responses
    from alignpipe.rl.ppo import Rollout, single_pass

    prompts = [prompt for prompt, _ in chosen]
    batch = sample_responses(m.policy, m.tokenizer, [ids for _, ids in chosen], temperature=p.temperature,
                             top_p=1.0, max_new_tokens=p.max_new_tokens, seed=seed,
                             share=ALONE if replicas is None else replicas.share())
    texts = m.tokenizer.batch_decode(batch.responses(), skip_special_tokens=True)
    mask = batch.response_mask.bool()  # (B, T) through the first EOS, by position
    one_pass = single_pass(p, p.batch_size)

    m.train(False)
    scoring.submit(batch, texts, prompts)
    with torch.no_grad():
        if not one_pass:
            logprobs_old, values_old = forward_by_length(m, batch, p.temperature, entropy=False)  # (B, T) each
    frozen = scoring.results()
    ref_logprobs, scores = frozen["reference"], frozen["reward"].float()  # (B, T), (B,)
    remote_values = frozen.get("values")  # V_old from a critic training in a rank of its own
    if tuple(scores.shape) != (len(chosen),):
        raise StageFailed(f"the reward returned {tuple(scores.shape)} scores for {len(chosen)} responses")
    current = None
    if one_pass:
        m.train(True)
        current = forward_by_length(m, batch, p.temperature)  # (B, T) each, with grad
        logprobs_old, values_old = current[0], current[1]  # Rollout keeps detached copies
    if remote_values is not None:
        values_old = remote_values
    rollout_ = Rollout(logprobs_old=logprobs_old, values_old=values_old, ref_logprobs=ref_logprobs,
                       response_mask=mask, scores=scores,
                       eos_emitted=batch.ended(m.tokenizer.eos_token_id))
    gold_mean = None if gold is None else sum(gold(texts, prompts)) / len(texts)
    if replicas is not None:  # every batch statistic is the global batch's
        rollout_ = replicas.gather_rollout(rollout_)
        gold_mean = None if gold is None else replicas.mean(gold_mean * len(texts), len(texts))
    return Sampled(batch, texts, rollout_, gold_mean, current)


def _optimizers(m: PPOModels, p: Params) -> tuple[dict, dict]:
    """Adam (AdamW, weight decay 0, eps adam_eps) per trained model, LR decaying linearly to 0 per rollout."""
    import torch

    from alignpipe.train import linear_warmup_decay, make_adamw

    trained = m.policy if m.value_head is None else torch.nn.ModuleDict({"policy": m.policy, "head": m.value_head})
    optimizers = {} if m.policy is None else {"policy": make_adamw(trained, p.lr, 0.0, eps=p.adam_eps)}
    if m.critic is not None:
        optimizers["critic"] = make_adamw(m.critic, p.lr if p.critic_lr is None else p.critic_lr, 0.0, eps=p.adam_eps)
    return optimizers, {k: linear_warmup_decay(o, p.rollouts) for k, o in optimizers.items()}


def _kl_controller(p: Params) -> Any:
    from alignpipe.rl.kl import AdaptiveKLController, FixedKLController

    if p.kl_control == "adaptive":
        return AdaptiveKLController(p.beta, p.kl_target, p.kl_horizon)
    return FixedKLController(p.beta)


NAN_HINT = "check the reward for NaN/inf, lower params.lr or keep params.max_grad_norm set"


def _check_finite(ctx: StageContext, step: int, values: dict[str, float], keys: tuple[str, ...]) -> None:
    """StageFailed on NaN/inf, naming the rollout and the last good checkpoint (which is kept)."""
    from alignpipe.train import check_finite

    for key in keys:
        check_finite(values[key], step=step, what=f"rollout {step} {key}", checkpoints=ctx.checkpoints,
                     hint=NAN_HINT)


def _save_value(m: PPOModels, out: Any, scratch: Any) -> None:
    """The value model as a *ForSequenceClassification directory (shared: πRLHF's backbone + the value head)."""
    import shutil

    import torch

    from alignpipe.models.build import reward_model_from_causal, save_model, score_head

    if m.critic is not None:
        save_model(m.critic, m.tokenizer, out)
        return
    save_model(m.policy, m.tokenizer, scratch)
    critic = reward_model_from_causal(scratch)
    with torch.no_grad():
        score_head(critic).weight.copy_(m.value_head.weight)
    save_model(critic, m.tokenizer, out)
    shutil.rmtree(scratch, ignore_errors=True)


CURVE_KEYS = ("score", "kl", "beta", "gold", "entropy", "response_length", "eos_rate", "value_loss",
              "explained_variance")


def _summary(p: Params, history: list[dict], elapsed: float, m: PPOModels, reward_desc: str) -> dict[str, Any]:
    first, last = history[0], history[-1]
    gold = "" if last.get("gold") is None else f", gold {first['gold']:.3f} → {last['gold']:.3f}"
    target = f" (target {p.kl_target:g})" if p.kl_control == "adaptive" else ""
    headline = (f"PPO: {len(history)} rollouts × {p.batch_size}, score {first['score']:.3f} → {last['score']:.3f}"
                f"{gold}, KL {last['kl']:.2f} nats{target}, β {last['beta']:.4f}, {elapsed:.0f} s")
    minibatches = p.batch_size // (p.minibatch_size or p.batch_size)
    return {
        "score": last["score"], "kl": last["kl"], "beta": last["beta"], "gold": last.get("gold"),
        "rollouts": len(history), "optimizer_steps": len(history) * p.ppo_epochs * minibatches,
        "wall_seconds": round(elapsed, 1), "reward": reward_desc, "critic_init": m.critic_source,
        "curve": {k: [h.get(k) for h in history] for k in CURVE_KEYS}, "headline": headline,
    }


# ---------------------------------------------------------------------------------------------------------------


def run(ctx: StageContext) -> None:
    import torch

    from alignpipe.distributed.groups import RemoteCritic, Scoring
    from alignpipe.distributed.world import World
    from alignpipe.models.build import save_model
    from alignpipe.rl.ppo import NonFiniteGradient, compute_advantages, ppo_update
    from alignpipe.train import Checkpointer, EpochBatches, run_key, seed_everything, sub_seed
    from alignpipe.train.guard import non_finite

    p: Params = ctx.params
    started = time.monotonic()

    # -- seed
    seed_everything(ctx.seed)

    # -- placement: which of actor, critic, reference and reward model this process holds
    world = World.from_env()
    plan, roles = _placement(ctx, world)
    trainers = world.subgroup(list(roles.trainers))  # the actor's replicas (None in a serving rank); collective
    critics = world.subgroup(list(roles.critic_ranks)) if roles.critic_ranks else None  # a critic's replicas
    if critics is not None:  # the critic apart, one replica per actor replica: it serves its trainer
        return _serve_critic(ctx, world, roles, critics)
    if trainers is None:  # a process of frozen models: it serves its trainers
        return _serve(ctx, world, roles)
    if world.is_main:
        ctx.log(f"placement {plan.describe()}: {plan.reason}")

    # -- inputs: one tokenizer for policy, reference, reward model and critic, checked before any compute
    _common.require_inputs(ctx, "policy", "prompts")
    tokenizer = _common.load_tokenizer(ctx, "policy")
    _common.fix_pad_token(ctx, "policy", tokenizer)
    _check_tokenizers(ctx, tokenizer)
    gold = _common.score_function(ctx, "gold_function")

    # -- data: prompt ids that fit every model, in a seeded order of whole batches
    limit = _common.position_limit(ctx, [n for n in MODEL_INPUTS if n in ctx.inputs])
    kept, skipped = _prompt_ids(ctx, tokenizer, limit)
    order = EpochBatches(len(kept), p.batch_size, sub_seed(ctx.seed, "order"), drop_last=True)

    # -- model: policy, frozen reference, critic, reward (the frozen ones here or in their own processes)
    models = _load_models(ctx, tokenizer, reference=roles.trainer_holds("reference"), critic=not roles.critic_ranks)
    scoring = Scoring(_frozen(ctx, tokenizer, roles.held_by(world.rank), models.reference),
                      roles.serving(world.rank), world)
    remote = RemoteCritic(world, roles.critic_of(world.rank)) if roles.critic_ranks else None
    replicas = _replicas(ctx, trainers, models)  # or None: this process is the only trainer
    if world.is_main:
        ctx.log(f"{len(kept)} prompts, {p.rollouts} rollouts × {p.batch_size}; critic from {models.critic_source!r}")

    # -- optimizer, schedules, KL controller, minibatch order, resume
    cfg = p  # Params is a PPOConfig (plus the stage's own fields)
    optimizers, schedulers = _optimizers(models, p)
    kl_ctl = _kl_controller(p)
    generator = torch.Generator().manual_seed(sub_seed(ctx.seed, "minibatches"))
    trained = {"policy": models.policy, "critic": models.critic, "value_head": models.value_head}
    ckpt = Checkpointer(ctx.checkpoints, key=run_key(ctx), models={k: v for k, v in trained.items() if v is not None},
                        optimizers=optimizers, schedulers=schedulers, generators={"minibatches": generator},
                        batches={"prompts": order}, log=ctx.log, world=trainers if replicas is not None else None)
    resumed = ckpt.restore(None if remote is None else remote.restore)
    state = resumed.state if resumed else {"history": [], "elapsed": 0.0}
    if resumed:
        kl_ctl.load_state_dict(state["kl"])

    # -- loop: rollout → advantages → PPO epochs → KL control → log → checkpoint
    for r in range(resumed.step if resumed else 0, p.rollouts):
        t0 = time.perf_counter()
        indices = order.next().indices
        sampled = rollout(models, [kept[i] for i in (indices if replicas is None else replicas.rows(indices))],
                          scoring, gold, p, seed=sub_seed(ctx.seed, "rollout", r), replicas=replicas)
        adv = compute_advantages(sampled.rollout, kl_ctl.beta, cfg)
        _check_finite(ctx, r + 1, adv.stats, ("score", "kl", "reward_total"))  # before any weight moves
        t1 = time.perf_counter()
        models.train()
        try:
            forward = sampled.forward_fn(models, p.temperature)
            if remote is not None:  # the critic's rank runs the value half meanwhile
                remote.update(sampled.rollout, adv.advantages, adv.returns, generator)
            result = ppo_update(sampled.rollout, adv.advantages, adv.returns,
                                forward if replicas is None else replicas.local(forward), optimizers["policy"],
                                optimizers.get("critic"), cfg, generator, replicas,
                                None if remote is None else remote.link)
        except NonFiniteGradient as e:  # raised before the optimizer stepped: no NaN reaches a weight
            name, norm = next(iter(e.norms.items()))
            raise non_finite(f"rollout {r + 1} {name} gradient norm", norm, step=r + 1, checkpoints=ctx.checkpoints,
                             hint=NAN_HINT) from None
        stats = {**adv.stats, **result.summary(), "lr": schedulers["policy"].get_last_lr()[0],
                 **({} if sampled.gold is None else {"gold": sampled.gold}),
                 "rollout_seconds": t1 - t0, "update_seconds": time.perf_counter() - t1}
        _check_finite(ctx, r + 1, stats, ("policy_loss", "value_loss"))  # before the checkpoint keeps them
        kl_ctl.update(adv.stats["kl"], n_steps=p.batch_size)
        for sched in schedulers.values():
            sched.step()
        ctx.log_metrics(r + 1, **stats)
        ctx.progress(r + 1, p.rollouts, "rollouts")
        state["history"].append({k: stats.get(k) for k in CURVE_KEYS})
        if world.is_main:  # replicas compute the same statistics
            _log_rollout(ctx, r, p, stats)
        if (r + 1) % p.checkpoint_every == 0 and r + 1 < p.rollouts:
            ckpt.save(r + 1, {**state, "kl": kl_ctl.state_dict(),
                              "elapsed": state["elapsed"] + time.monotonic() - started},
                      files=None if remote is None else remote.checkpoint)

    if remote is not None and world.is_main:  # the trained value model, before the critic's rank is told to stop
        remote.publish(ctx.output_dir("value"))
    scoring.close()
    if world.rank:  # a replica: rank 0 holds the same weights and publishes them
        world.close()
        return

    # -- eval: the curves and the final rollout's statistics
    elapsed = state["elapsed"] + time.monotonic() - started
    reward_desc = p.reward_function or f"reward_model {ctx.inputs['reward_model'].id[:12]}"
    summary = _summary(p, state["history"], elapsed, models, reward_desc)
    ctx.log(summary["headline"])

    # -- save: πRLHF (LoRA merged) and the value model
    models.train(False)
    with torch.no_grad():
        save_model(models.policy, tokenizer, ctx.output_dir("policy"))
        if remote is None:
            _save_value(models, ctx.output_dir("value"), ctx.work_dir / "value-export")
    ctx.annotate("policy", **summary, reference=ctx.inputs["policy"].id, skipped=skipped, lora=p.lora,
                 placement=plan.as_dict())
    last = state["history"][-1]
    ctx.annotate("value", critic=p.critic, critic_init=models.critic_source, value_loss=last["value_loss"],
                 explained_variance=last["explained_variance"], policy=ctx.inputs["policy"].id)
    world.close()


STAGE = StageDef(
    name="ppo", version="2", params=Params, run=run, check=check, distributed=True, models=models,
    inputs={"policy": InputDef("model", doc="πSFT: the initial policy and the frozen reference"),
            "reward_model": InputDef("model", required=False, doc="Rφ (or params.reward_function)"),
            "prompts": InputDef("dataset", doc='{"prompt"} records: a file or a dataset dir'),
            "critic_init": InputDef("model", required=False, doc="value model init (default: the reward model)")},
    outputs={"policy": "model", "value": "model"}, doc=__doc__ or "",
)
