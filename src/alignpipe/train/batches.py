"""Resumable data order: a fresh permutation per epoch derived from the seed, a position inside it.

The order of epoch e is `shuffle(range(n))` with a `random.Random(sub_seed(seed, "epoch", e))`: it depends
only on (seed, epoch, n), never on how many random numbers were drawn before, so a resumed run that restores
(epoch, position) sees exactly the batches the uninterrupted run saw. Pure Python, no torch.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from typing import Any

from alignpipe.train.seeding import sub_seed


@dataclass(frozen=True)
class Batch:
    epoch: int
    position: int  # index in the epoch's permutation of this batch's first example
    indices: list[int]  # example indices, in order


class EpochBatches:
    """Batches of example indices over epochs, resumable by (epoch, position).

    `next()` returns the next batch and advances; an epoch ends with a smaller batch unless `drop_last`.
    `state_dict()` / `load_state_dict()` checkpoint the position (and n, batch_size, seed, to refuse a
    checkpoint written for different data).
    """

    def __init__(self, n: int, batch_size: int, seed: int, *, shuffle: bool = True, drop_last: bool = False):
        if n < 1:
            raise ValueError(f"EpochBatches needs at least one example, got n={n}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        if drop_last and batch_size > n:
            raise ValueError(f"drop_last with batch_size {batch_size} > n {n} leaves no batch")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.shuffle, self.drop_last = shuffle, drop_last
        self.epoch, self.position = 0, 0
        self._order: tuple[int, list[int]] | None = None

    @property
    def batches_per_epoch(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def permutation(self, epoch: int) -> list[int]:
        """The order of `epoch` (identity when shuffle is off)."""
        order = list(range(self.n))
        if self.shuffle:
            random.Random(sub_seed(self.seed, "epoch", epoch)).shuffle(order)
        return order

    def _epoch_order(self) -> list[int]:
        if self._order is None or self._order[0] != self.epoch:
            self._order = (self.epoch, self.permutation(self.epoch))
        return self._order[1]

    def next(self) -> Batch:
        end = self.position + self.batch_size
        if self.position >= self.n or (self.drop_last and end > self.n):
            self.epoch, self.position = self.epoch + 1, 0
            end = self.batch_size
        batch = Batch(self.epoch, self.position, self._epoch_order()[self.position:end])
        self.position = min(end, self.n)
        return batch

    _IDENTITY = ("n", "batch_size", "seed", "shuffle", "drop_last")  # a checkpoint must agree on these

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "n": self.n, "batch_size": self.batch_size,
                "seed": self.seed, "shuffle": self.shuffle, "drop_last": self.drop_last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        differ = [k for k in self._IDENTITY if state.get(k) != mine[k]]
        if differ:
            detail = ", ".join(f"{k} {state.get(k)} (checkpoint) vs {mine[k]} (now)" for k in differ)
            raise ValueError(f"the checkpoint's data order was made for other data: {detail}")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


class LengthGroupedBatches(EpochBatches):
    """EpochBatches whose batches hold examples of similar length: far less padding, same examples per epoch.

    Epoch e starts from EpochBatches' permutation of e; it is cut into groups of `group_batches` batches, each
    group is sorted by length (stable) and cut into batches, and the full batches are shuffled (seeded by seed
    and e) with the one short batch, if any, kept last. The order is still a function of (seed, epoch, lengths),
    so (epoch, position) resumes it exactly; a batch's examples are a random draw from lengths close together
    (the mega-batch scheme of HF's group_by_length; larger groups: less padding, more length-correlated batches).
    """

    _IDENTITY = (*EpochBatches._IDENTITY, "group_batches", "lengths_hash")

    def __init__(self, lengths: list[int], batch_size: int, seed: int, *, group_batches: int = 32,
                 drop_last: bool = False):
        super().__init__(len(lengths), batch_size, seed, drop_last=drop_last)
        if group_batches < 1:
            raise ValueError(f"group_batches must be ≥ 1, got {group_batches}")
        self.lengths, self.group_batches = list(lengths), group_batches

    def permutation(self, epoch: int) -> list[int]:
        order, size = super().permutation(epoch), self.batch_size
        span = size * self.group_batches
        batches: list[list[int]] = []
        for start in range(0, len(order), span):
            group = sorted(order[start:start + span], key=self.lengths.__getitem__)
            batches += [group[i:i + size] for i in range(0, len(group), size)]
        full = [b for b in batches if len(b) == size]
        random.Random(sub_seed(self.seed, "length_groups", epoch)).shuffle(full)
        return [i for b in full + [b for b in batches if len(b) < size] for i in b]

    def state_dict(self) -> dict[str, Any]:
        digest = hashlib.sha256(",".join(map(str, self.lengths)).encode()).hexdigest()[:16]
        return {**super().state_dict(), "group_batches": self.group_batches, "lengths_hash": digest}


def train_eval_split(n: int, eval_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train indices, eval indices), a seeded random split; eval gets round(n·fraction) examples, at least
    one when the fraction is > 0, and train keeps at least one. Both lists are sorted."""
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    n_eval = 0 if eval_fraction == 0 else min(n - 1, max(1, round(n * eval_fraction)))
    order = list(range(n))
    random.Random(sub_seed(seed, "eval_split")).shuffle(order)
    return sorted(order[n_eval:]), sorted(order[:n_eval])
