"""Param fields several stage types share, declared once (torch-free). Stage-specific defaults stay in each
stage's own Params; only fields that mean and default the same everywhere live here."""

from __future__ import annotations

from pydantic import Field

from alignpipe.pipeline.stagedef import StrictParams


class LoopParams(StrictParams):
    steps: int | None = Field(default=None, ge=1)
    """optimizer steps; overrides epochs"""
    weight_decay: float = Field(default=0.0, ge=0)
    """AdamW weight decay on matrices"""
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    """gradient clipping norm; null = no clipping"""
    max_skip_fraction: float = Field(default=0.01, ge=0, le=1)
    """fail if more than this fraction of the records is invalid or over-long (they are skipped and counted)"""


class LoraParams(StrictParams):
    lora: bool = False
    """train LoRA adapters (merged into the saved model) instead of all weights; reward also trains its score
    head, ppo adapts the policy only"""
    lora_r: int = Field(default=8, ge=1)
    """LoRA rank"""
    lora_alpha: float = Field(default=16.0, gt=0)
    """LoRA scaling numerator (scale = alpha / r)"""
