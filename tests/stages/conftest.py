"""Stage tests run on one torch thread: fast on a shared 2-core machine, and bit-reproducible.

(This directory is on sys.path already — pytest's rootdir-relative import mode — so `scorers:...` functions and
`stage_util` import without help.)"""

import pytest


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)
