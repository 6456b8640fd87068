"""tests/rl: pure tensor math on CPU, one thread (the machine is shared; results must not depend on threads)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    torch.set_num_threads(1)
