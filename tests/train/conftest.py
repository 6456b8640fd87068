"""tests/train: the training-loop utilities on CPU, one thread (results must not depend on the thread count)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    torch.set_num_threads(1)
