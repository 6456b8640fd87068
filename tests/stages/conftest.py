"""Stage tests run on one torch thread: fast on a shared 2-core machine, and bit-reproducible.

(This directory is on sys.path already — pytest's rootdir-relative import mode — so `scorers:...` functions and
`stage_util` import without help.)"""

import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def pad_is_eos_model(tiny_model_dirs, tmp_path) -> Path:
    """The tiny GPT-2 saved with pad = eos, as many published checkpoints are."""
    d = tmp_path / "pad-is-eos"
    shutil.copytree(tiny_model_dirs["gpt2"], d)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(d)
    tok.pad_token = tok.eos_token
    tok.save_pretrained(d)
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "pad_token_id": tok.eos_token_id}))
    return d
