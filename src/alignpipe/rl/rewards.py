"""Response masks, the end index T_end, the no-EOS policy and per-token rewards (PPO.md items 1, 10, 11).

Responses sit on the right, one row per sample: `response_ids` (B, T) holds the generated tokens, then PAD.
A token is *valid* (counts for KL, loss and gradient) iff it is at or before the first EOS and no PAD occurs
at or before it: `[t0, t1, EOS, PAD, PAD]` → `[1, 1, 1, 0, 0]`. pad_id must differ from eos_id, otherwise
the real EOS would be masked and the policy never learns to stop.

T_end is the index of the last valid token: the EOS if one was emitted, else the last generated token
(T − 1 when generation hit the length limit).

No-EOS policy (item 10): a response that never emitted EOS was truncated, and its RM score rates an
unfinished text. We *replace* its score S by a fixed penalty (default −1, OpenAI 2019 / N+ TL;DR), set with
`no_eos_penalty`; `None` keeps the RM score. The penalty sits on T_end like any score.
"""

from __future__ import annotations

import torch

from alignpipe.rl.advantages import zero_pads


def response_mask(response_ids: torch.Tensor, eos_id: int, pad_id: int) -> torch.Tensor:
    """Valid-token mask of right-padded responses.  response_ids: (B, T) int; returns (B, T) bool.

    Also ends a row at its first PAD (for batches padded without EOS). Sampled batches need not call this: their
    mask comes from the sampler (`models.forward.eos_mask`, through the first EOS), where a pad id *sampled*
    mid-response is a real token — the ppo stage uses that one, so reward, KL and loss see the same tokens."""
    if eos_id == pad_id:
        raise ValueError(
            f"pad_id == eos_id == {eos_id}: the EOS would be masked as padding; add a dedicated pad token"
        )
    is_eos = response_ids == eos_id  # (B, T)
    is_pad = response_ids == pad_id  # (B, T)
    eos_before = (torch.cumsum(is_eos.long(), dim=1) - is_eos.long()) > 0  # (B, T) an EOS strictly before t
    pad_so_far = torch.cumsum(is_pad.long(), dim=1) > 0  # (B, T) a PAD at or before t
    return ~eos_before & ~pad_so_far


def end_index(mask: torch.Tensor) -> torch.Tensor:
    """T_end, the index of the last valid token per row.  mask: (B, T); returns (B,) long.

    Raises ValueError on an empty response (no valid token): it has no place to put the score.
    """
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)  # (B, T)
    last = torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values  # (B,)
    if bool((last < 0).any()):
        empty = torch.nonzero(last < 0).flatten().tolist()
        raise ValueError(f"responses {empty} have no valid token; every response needs at least one token")
    return last


def eos_emitted(response_ids: torch.Tensor, mask: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Whether each response ended with EOS (at T_end).  response_ids, mask: (B, T); returns (B,) bool."""
    t_end = end_index(mask)  # (B,)
    return response_ids.gather(1, t_end[:, None]).squeeze(1) == eos_id


def apply_no_eos_penalty(scores: torch.Tensor, ended: torch.Tensor, penalty: float | None) -> torch.Tensor:
    """Replace the score of responses without EOS by `penalty`; None leaves scores as they are.

    scores: (B,) float; ended: (B,) bool from `eos_emitted`; returns (B,).
    """
    if penalty is None:
        return scores
    return torch.where(ended.bool(), scores, torch.full_like(scores, penalty))


def per_token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """r_t = −β·kl_t on valid tokens, plus the score S on T_end; 0 on padding (item 11).

    scores: (B,) the (normalized, penalty-applied) scores; kl: (B, T) per-token KL estimate; mask: (B, T).
    Returns (B, T) with Σ_t r_t = S − β·Σ_t kl_t per row.
    """
    valid = mask.bool()
    rewards = zero_pads(-beta * kl, valid)  # (B, T)
    t_end = end_index(valid)  # (B,)
    return rewards.scatter_add(1, t_end[:, None], scores[:, None].to(rewards.dtype))
