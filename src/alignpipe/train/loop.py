"""Pieces of a training step shared by the stages: optimizer construction, a guarded optimizer step, the
token-level causal-LM loss and its evaluation."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alignpipe.pipeline.context import Checkpoints
from alignpipe.train.guard import check_finite

IGNORE_INDEX = -100  # label value excluded from the loss (HF convention; same as alignpipe.data.tokenize)


def make_adamw(model: nn.Module, lr: float, weight_decay: float = 0.0, eps: float = 1e-8) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on biases, norms and embeddings' 1-d params."""
    decay, no_decay = [], []
    for _, p in sorted(((n, p) for n, p in model.named_parameters() if p.requires_grad), key=lambda x: x[0]):
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, eps=eps)


def optimizer_step(  # noqa: PLR0913 — one guarded step needs each of these
    loss: Tensor,
    *,
    step: int,
    optimizer: torch.optim.Optimizer,
    parameters: Iterable[Tensor],
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    max_grad_norm: float | None = None,
    checkpoints: Checkpoints | None = None,
) -> float:
    """zero_grad → check loss → backward → clip (if max_grad_norm) → check grad norm → step → scheduler.step.

    `step` is the 1-based number of this optimizer step (used in error messages). Returns the gradient norm
    before clipping. A NaN/inf loss or gradient raises StageFailed before the weights change.
    """
    check_finite(loss, step=step, what="loss", checkpoints=checkpoints)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in parameters if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm else float("inf"))
    check_finite(norm, step=step, what="gradient norm", checkpoints=checkpoints)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return float(norm)


def lm_loss(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, labels: Tensor) -> tuple[Tensor, int]:
    """Token-level mean next-token cross-entropy over labelled tokens, and their count.

    input_ids, attention_mask, labels: (B, L), right-padded, labels IGNORE_INDEX where not trained on. Token i
    is predicted from column i − 1 (HF's shift). position_ids follow the mask (PPO.md item 3). Every labelled
    token weighs the same: long completions weigh more than short ones (as HF's labels loss).
    """
    from alignpipe.models.forward import position_ids_from_mask

    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids_from_mask(attention_mask), use_cache=False).logits  # (B, L, V)
    targets = labels[:, 1:]  # (B, L-1)
    n_tokens = int((targets != IGNORE_INDEX).sum())
    loss_sum = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(),
                               ignore_index=IGNORE_INDEX, reduction="sum")
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
