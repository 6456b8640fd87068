"""Helpers shared by the integration tests: the CLI as a process, loading HF directories in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`alignpipe ARGS` as a process (exit code, stdout, stderr as a user sees them)."""
    return subprocess.run([sys.executable, "-m", "alignpipe", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=300)


LOAD = """
import json, sys
from transformers import AutoConfig, AutoTokenizer, GenerationConfig
import transformers
out = {}
for path in sys.argv[1:]:
    config = AutoConfig.from_pretrained(path)
    cls = "AutoModelForCausalLM" if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.architectures) \\
        else "AutoModelForSequenceClassification"
    model = getattr(transformers, cls).from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    try:
        gen = GenerationConfig.from_pretrained(path).to_dict()
    except OSError:
        gen = None
    ids = tok("Review of the lamp:", return_tensors="pt")
    out[path] = {"class": type(model).__name__, "auto": cls, "chat_template": bool(tok.chat_template),
                 "pad": tok.pad_token_id, "eos": tok.eos_token_id, "generation_config": gen,
                 "output": model(**ids).logits.flatten()[-3:].tolist()}
print(json.dumps(out))
"""


def load_in_fresh_process(*paths: Path) -> dict[str, dict]:
    """Load each HF directory with its Auto class in a new Python process; what it found, per path."""
    res = subprocess.run([sys.executable, "-c", LOAD, *map(str, paths)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])
