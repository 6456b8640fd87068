"""Shared session fixtures: a local byte-level BPE tokenizer and tiny GPT-2 / Llama models (no network).

torch and transformers are imported inside the fixtures, so tests that never ask for them stay torch-free.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from browser import chromium  # noqa: F401 — the real headless Chromium fixture (tests/browser.py)

TINY_ARCHS = ("gpt2", "llama")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A 400-token BPE tokenizer trained on the default task's corpus (pad ≠ eos, no chat template)."""
    import torch

    from alignpipe.models.tokenizer import train_tokenizer
    from alignpipe.task import make_corpus

    torch.set_num_threads(1)
    return train_tokenizer(make_corpus(0, 300), vocab_size=400)


@pytest.fixture(scope="session")
def tiny_model_dirs(tiny_tokenizer, tmp_path_factory) -> dict[str, Path]:
    """arch -> HF directory of a randomly initialized 2-layer, hidden-32 causal LM with the tiny tokenizer."""
    from alignpipe.models.build import LMSpec, build_causal_lm, save_model

    root = tmp_path_factory.mktemp("tiny_models")
    dirs = {}
    for arch in TINY_ARCHS:
        spec = LMSpec(arch=arch, n_layer=2, hidden=32, n_head=2, max_positions=64)
        dirs[arch] = save_model(build_causal_lm(spec, tiny_tokenizer, seed=0), tiny_tokenizer, root / arch)
    return dirs
