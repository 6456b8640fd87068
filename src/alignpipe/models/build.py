"""Build, load and save the tiny causal LMs, reward models and critics; LoRA wrapping.

Every model this module returns has dropout off (PPO.md item 8): RLHF compares logprobs of the same model
across forwards (ratio ≡ 1 at the first minibatch), which dropout breaks. Saved artifacts are plain HF
directories (safetensors + config + tokenizer); a LoRA-wrapped model is merged before saving.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    GPT2Config,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

Arch = Literal["gpt2", "llama"]

# Config fields that hold dropout probabilities in the architectures transformers ships.
_DROPOUT_FIELDS = (
    "resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout", "attention_dropout", "hidden_dropout",
    "dropout", "activation_dropout", "classifier_dropout", "hidden_dropout_prob", "attention_probs_dropout_prob",
    "mlp_dropout", "embd_dropout",
)
LORA_TARGETS: dict[str, list[str]] = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


@dataclass(frozen=True)
class LMSpec:
    """Shape of a tiny causal LM. The defaults give about 0.85M parameters with a 650-token vocabulary."""

    arch: Arch = "gpt2"
    n_layer: int = 4
    hidden: int = 128
    n_head: int = 4
    max_positions: int = 128
    intermediate: int | None = None  # MLP width; None = 4·hidden (gpt2) or the SwiGLU-equivalent 8/3·hidden (llama)


def build_causal_lm(spec: LMSpec, tokenizer: PreTrainedTokenizerBase, seed: int | None = None) -> PreTrainedModel:
    """A randomly initialized causal LM for `tokenizer` (vocab size and special ids), dropout off, fp32."""
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise ValueError("the tokenizer needs a pad token distinct from eos: call ensure_pad_token(tokenizer) first")
    if spec.hidden % spec.n_head:
        raise ValueError(f"hidden ({spec.hidden}) must be divisible by n_head ({spec.n_head})")
    ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    if spec.arch == "gpt2":
        config = GPT2Config(
            n_layer=spec.n_layer, n_embd=spec.hidden, n_head=spec.n_head, n_positions=spec.max_positions,
            n_inner=spec.intermediate, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids,
        )
    elif spec.arch == "llama":
        config = LlamaConfig(
            num_hidden_layers=spec.n_layer, hidden_size=spec.hidden, num_attention_heads=spec.n_head,
            num_key_value_heads=spec.n_head, max_position_embeddings=spec.max_positions,
            intermediate_size=spec.intermediate or 64 * math.ceil(spec.hidden * 8 / 3 / 64),
            attention_dropout=0.0, **ids,
        )
    else:
        raise ValueError(f"unknown arch {spec.arch!r}; expected 'gpt2' or 'llama'")
    with _seeded(seed):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    disable_dropout(model)
    return model


@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Run the block with torch's global RNG seeded, restoring the caller's RNG state afterwards."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def disable_dropout(model: nn.Module) -> nn.Module:
    """Set every dropout probability in `model` to 0: Dropout modules, float `*drop*` attributes (attention
    modules copy config.attention_dropout at init) and the config fields, so a reload stays dropout-free."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for name, value in list(vars(module).items()):
            if "drop" in name and isinstance(value, float):
                setattr(module, name, 0.0)
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            for name in _DROPOUT_FIELDS:
                if isinstance(getattr(config, name, None), float):
                    setattr(config, name, 0.0)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def load_causal_lm(path: str | Path) -> PreTrainedModel:
    """A causal LM from a HF directory, fp32, dropout off, in eval mode (call .train() to train)."""
    with _quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    return disable_dropout(model).eval()


def _sequence_classifier(path: str | Path, tokenizer: PreTrainedTokenizerBase | None, fresh_head: bool
                         ) -> PreTrainedModel:
    """AutoModelForSequenceClassification (num_labels=1) from `path`; with `tokenizer` (whose pad the stage
    fixed, PPO.md item 1) the model is made to match it: its config's pad id, embeddings grown for a new pad."""
    from alignpipe.models.tokenizer import ensure_pad_token

    pad = {} if tokenizer is None else {"pad_token_id": tokenizer.pad_token_id}
    with _quiet_transformers(warnings=not fresh_head):  # a fresh head's "newly initialized: score.weight" is expected
        model = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=1, dtype=torch.float32,
                                                                   **pad)
    if tokenizer is not None:
        ensure_pad_token(tokenizer, model)
    if model.config.pad_token_id is None:
        raise ValueError(f"{path}: config.json has no pad_token_id; run ensure_pad_token(tokenizer, model), resave")
    return disable_dropout(model).eval()


def load_reward_model(path: str | Path, tokenizer: PreTrainedTokenizerBase | None = None) -> PreTrainedModel:
    """A scalar-output sequence classifier (reward model or critic) from a HF directory, dropout off, eval mode
    (matched to `tokenizer`'s pad token if given)."""
    return _sequence_classifier(path, tokenizer, fresh_head=False)


def reward_model_from_causal(lm_path: str | Path, tokenizer: PreTrainedTokenizerBase | None = None
                             ) -> PreTrainedModel:
    """A sequence classifier (num_labels=1) on the backbone of the causal LM in `lm_path` (matched to
    `tokenizer`'s pad token if given).

    The LM head is dropped; the new score head is initialized N(0, std 1/√(d+1)) (PPO.md item 22, as in
    openai/lm-human-preferences) so initial scores have unit scale.
    """
    model = _sequence_classifier(lm_path, tokenizer, fresh_head=True)
    head = score_head(model)
    d = head.in_features
    with torch.no_grad():
        head.weight.normal_(mean=0.0, std=1.0 / math.sqrt(d + 1))
        if head.bias is not None:
            head.bias.zero_()
    return model


REWARD_NORM_KEY = "alignpipe_reward_normalization"


def set_reward_normalization(model: nn.Module, bias: float, gain: float = 1.0) -> None:
    """Record the normalization S = gain · (raw + bias) in the model's config (saved with it, PPO.md item 13).

    The reward stage sets bias = −mean and gain = 1/std of raw scores on πSFT samples; consumers apply it with
    `normalized_scores`.
    """
    if not gain > 0:
        raise ValueError(f"reward normalization gain must be > 0, got {gain}")
    setattr(unwrap(model).config, REWARD_NORM_KEY, {"bias": float(bias), "gain": float(gain)})


def reward_normalization(model: nn.Module) -> tuple[float, float]:
    """(bias, gain) recorded in the model's config; (0, 1) when none was recorded."""
    norm = getattr(unwrap(model).config, REWARD_NORM_KEY, None) or {}
    return float(norm.get("bias", 0.0)), float(norm.get("gain", 1.0))


def fold_reward_normalization(model: nn.Module) -> dict[str, Any]:
    """Move the recorded normalization S = gain·(raw + bias) into the weights, so a plain HF consumer (TRL, a
    pipeline, `AutoModelForSequenceClassification`) reads S itself: gain scales the score head; the offset gain·bias
    goes into the head's bias, or, for heads without one (GPT-2 and Llama's), into the final norm's bias along the
    head's direction: shifting that bias by c·w/‖w‖² shifts every score by exactly c (the norm feeds only the head).
    A model whose last step before the head has no additive term (Llama's RMSNorm) keeps the offset in its config
    (then raw + bias = S; `normalized_scores` applies it). Returns what was folded, for the manifest."""
    bias, gain = reward_normalization(model)
    head = score_head(model)
    offset = gain * bias
    with torch.no_grad():
        head.weight.mul_(gain)
        if head.bias is not None:
            head.bias.add_(offset)
            left = 0.0
        else:
            norm = _final_norm(unwrap(model))
            if norm is not None and getattr(norm, "bias", None) is not None:
                w = head.weight[0].to(norm.bias.dtype)  # (d,)
                norm.bias.add_(offset * w / w.dot(w))
                left = 0.0
            else:
                left = offset
    setattr(unwrap(model).config, REWARD_NORM_KEY, {"bias": left, "gain": 1.0})
    return {"gain": gain, "offset": offset - left, "offset_in_config": left}


def _final_norm(model: PreTrainedModel) -> nn.Module | None:
    """The normalization layer whose output the score head reads (GPT-2: transformer.ln_f; Llama: model.norm)."""
    base = getattr(model, model.base_model_prefix, None)
    for name in ("ln_f", "norm", "final_layer_norm"):
        if base is not None and isinstance(getattr(base, name, None), nn.Module):
            return getattr(base, name)
    return None


def normalized_scores(model: nn.Module, raw: torch.Tensor) -> torch.Tensor:
    """gain · (raw + bias) with the model's recorded normalization; raw (B,) -> (B,)."""
    bias, gain = reward_normalization(model)
    return gain * (raw + bias)


@contextmanager
def _quiet_transformers(warnings: bool = True) -> Iterator[None]:
    """No per-file progress bars (they flood stage logs); optionally no warnings either."""
    from transformers.utils import logging as hf_logging

    logger = logging.getLogger("transformers")
    level, bars = logger.level, hf_logging.is_progress_bar_enabled()
    if not warnings:
        logger.setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        logger.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


def score_head(model: nn.Module) -> nn.Linear:
    """The scalar head of a (possibly LoRA-wrapped) sequence-classification model."""
    base = unwrap(model)
    head = getattr(base, "score", None)
    if head is None:
        raise ValueError(f"{type(base).__name__} has no `score` head; expected a *ForSequenceClassification model")
    # peft's modules_to_save wraps the head; its active copy (a ModuleDict entry) is what runs.
    copies = getattr(head, "modules_to_save", None)
    if copies is not None and "default" in copies:
        return copies["default"]
    return head


def unwrap(model: nn.Module) -> PreTrainedModel:
    """The underlying transformers model of a peft-wrapped model (LoRA layers stay injected and active)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def apply_lora(
    model: PreTrainedModel,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    target_modules: list[str] | None = None,
) -> nn.Module:
    """Wrap `model` with LoRA adapters (peft). Only adapters (and a sequence classifier's score head) train.

    target_modules defaults to all attention and MLP projections of the arch (LORA_TARGETS).
    """
    from peft import LoraConfig, TaskType, get_peft_model

    model_type = model.config.model_type
    if target_modules is None:
        if model_type not in LORA_TARGETS:
            raise ValueError(f"no default LoRA target modules for model_type {model_type!r}; pass target_modules")
        target_modules = LORA_TARGETS[model_type]
    is_classifier = hasattr(model, "score")
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        task_type=TaskType.SEQ_CLS if is_classifier else TaskType.CAUSAL_LM,
        modules_to_save=["score"] if is_classifier else None,
        fan_in_fan_out=model_type == "gpt2",  # GPT-2 stores projections as Conv1D (in, out)
    )
    return get_peft_model(model, config)


def save_model(model: nn.Module, tokenizer: PreTrainedTokenizerBase, directory: str | Path) -> Path:
    """Save a plain HF directory (safetensors weights, config, generation config, tokenizer).

    A LoRA-wrapped model is merged into a copy first, so `model` stays wrapped and trainable and the saved
    artifact loads with `from_pretrained` without peft. It saves in any process: transformers 5's save_pretrained
    silently writes only the tokenizer on a rank other than 0 of an initialized torch.distributed group (PPO's
    critic saves the value model in its own rank).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "merge_and_unload"):
        model = copy.deepcopy(model).merge_and_unload()
    if model.config.vocab_size < len(tokenizer):
        raise ValueError(f"model vocab ({model.config.vocab_size}) is smaller than the tokenizer ({len(tokenizer)})")
    with _quiet_transformers(), _saving_on_any_rank(model):
        model.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save_pretrained(str(directory))
    if not (directory / "config.json").is_file():
        raise RuntimeError(f"save_pretrained wrote no config.json into {directory}")
    return directory


@contextmanager
def _saving_on_any_rank(model: nn.Module) -> Iterator[None]:
    """transformers 5 asks model.should_save_on_this_rank(), False on a rank > 0; this process saves its own
    model, so it answers True for the duration (an instance attribute shadowing the method)."""
    model.should_save_on_this_rank = lambda is_main_process: is_main_process
    try:
        yield
    finally:
        del model.should_save_on_this_rank
