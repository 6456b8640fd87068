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


@pytest.fixture(scope="module")
def tiny_rm_dir(tiny_model_dirs, tiny_tokenizer, tmp_path_factory) -> Path:
    """An untrained reward model (a random scalar head) on the tiny GPT-2, with its tokenizer."""
    from alignpipe.models.build import reward_model_from_causal, save_model

    return save_model(reward_model_from_causal(tiny_model_dirs["gpt2"]), tiny_tokenizer,
                      tmp_path_factory.mktemp("rm") / "rm")


@pytest.fixture(scope="module")
def eval_prompts_dir(tmp_path_factory) -> Path:
    """24 held-out prompts of the default task, as a dataset directory."""
    from alignpipe.task import make_prompts

    d = tmp_path_factory.mktemp("prompts") / "prompts"
    d.mkdir()
    (d / "data.jsonl").write_text("".join(json.dumps({"prompt": q}) + "\n" for q in make_prompts(0, 24, "eval")))
    return d
