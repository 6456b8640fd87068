"""Pieces of a training step shared by the stages: optimizer construction, a guarded optimizer step, the
token-level causal-LM loss and its evaluation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignpipe.data.tokenize import IGNORE_INDEX
from alignpipe.pipeline.context import Checkpoints
from alignpipe.train.guard import check_finite


def make_adamw(model: nn.Module, lr: float, weight_decay: float = 0.0, eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on biases, norms and embeddings' 1-d params.

    The fused implementation (one kernel per parameter group instead of ~10 elementwise passes over every
    parameter) where torch has it for the parameters' device: for the tiny default models the optimizer step
    is otherwise ~15 % of a training step on CPU. Deterministic, so resume stays bit-identical."""
    decay, no_decay = [], []
    for _, p in sorted(((n, p) for n, p in model.named_parameters() if p.requires_grad), key=lambda x: x[0]):
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    params = [p for g in groups for p in g["params"]]
    fused = bool(params) and all(p.dtype in (torch.float32, torch.float16, torch.bfloat16) for p in params) and \
        params[0].device.type in ("cpu", "cuda")
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, eps=eps, fused=fused or None)


def optimizer_step(  # noqa: PLR0913 — one guarded step needs each of these
    loss: Tensor,
    *,
    step: int,
    optimizer: torch.optim.Optimizer,
    parameters: Iterable[Tensor],
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    max_grad_norm: float | None = None,
    checkpoints: Checkpoints | None = None,
    global_loss: float | None = None,
) -> float:
    """zero_grad → check loss → backward → clip (if max_grad_norm) → check grad norm → step → scheduler.step.

    `step` is the 1-based number of this optimizer step (used in error messages). `parameters` is iterated after the
    backward (a generator such as model.parameters() sees FSDP's shards, which hold the gradients). Returns the
    gradient norm before clipping. A NaN/inf loss or gradient raises StageFailed before the weights change.
    `global_loss`: the value checked instead of `loss` — a data-parallel step's global mean, so that every rank
    stops together.
    """
    check_finite(loss if global_loss is None else global_loss, step=step, what="loss", checkpoints=checkpoints)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in parameters if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm else float("inf"))
    norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP: a DTensor over the shards
    check_finite(norm, step=step, what="gradient norm", checkpoints=checkpoints)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return float(norm)


def autocast(precision: str, model: nn.Module) -> torch.autocast:
    """The compute precision of a training forward: "fp32" (no autocast) or "bf16" (matmuls and attention in
    bfloat16 under torch.autocast on the model's device; weights, gradients, optimizer state and losses stay fp32).
    bf16 pays where matmuls dominate: on an AVX-512-BF16 CPU 1.9× the fp32 tokens per CPU-second at width 512,
    2.8× at 1024, but 0.8× at the default width 128, whose step is bound by per-op overhead (benchmarks/sft)."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    device = next(model.parameters()).device.type
    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")


def lm_loss(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> tuple[Tensor, int]:
    """Token-level mean next-token cross-entropy over labelled tokens, and their count.

    input_ids, attention_mask, labels: (B, L), right-padded, labels IGNORE_INDEX where not trained on. Token i
    is predicted from column i − 1 (HF's shift). position_ids follow the mask (PPO.md item 3). Every labelled
    token weighs the same: long completions weigh more than short ones (as HF's labels loss). Logits are
    computed for the labelled positions only.
    """
    from alignpipe.models.forward import lm_head_pre_hook, position_ids_from_mask

    targets = labels[:, 1:]  # (B, L-1)
    keep = targets != IGNORE_INDEX  # (B, L-1)
    n_tokens = int(keep.sum())
    # The LM head runs only on the hidden states of labelled columns: logits (N, V) instead of (B, L, V). On SFT
    # data (prompt and pad columns not trained on) this skips about half of the head's matmul and log-softmax.
    with lm_head_pre_hook(model, lambda _m, args: (args[0][:, :-1][keep], *args[1:])):  # (B, L, d) -> (N, d)
        logits = model(input_ids=input_ids, attention_mask=attention_mask,
                       position_ids=position_ids_from_mask(attention_mask), use_cache=False).logits  # (N, V)
    loss_sum = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
    return loss_sum / max(1, n_tokens), n_tokens


@torch.no_grad()
def evaluate_lm(model: nn.Module, batches: Sequence[dict[str, Tensor]]) -> float:
    """Token-weighted mean LM loss over collated batches ({"input_ids", "attention_mask", "labels"});
    NaN for no labelled tokens. The model is put in eval mode and its training flag restored."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for b in batches:
            loss, n = lm_loss(model, b["input_ids"], b["attention_mask"], b["labels"])
            total += float(loss) * n
            count += n
    finally:
        model.train(was_training)
    return total / count if count else float("nan")
