"""TRL workers only (the TRL venv): a step-end stamp callback and a data-collator wrapper that counts each batch."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class StepClock:
    """stamps[i] = perf_counter at the end of optimizer step i + 1; counts[i] = count(batch) of the i-th batch."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.counts: list[float] = []

    def callback(self) -> Any:
        from transformers import TrainerCallback

        stamps = self.stamps

        class Stamp(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):  # noqa: ANN001 — transformers' signature
                stamps.append(time.perf_counter())

        return Stamp()

    def count_batches(self, trainer: Any, count: Callable[[list, Any], float]) -> None:
        """Wrap trainer.data_collator so every collated batch records count(features, batch)."""
        collate = trainer.data_collator

        def counting(features: list) -> Any:
            batch = collate(features)
            self.counts.append(count(features, batch))
            return batch

        trainer.data_collator = counting
