from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _engine_env(monkeypatch):
    """Stage processes import `teststages` from here; retries back off fast in tests."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("ALIGNPIPE_RETRY_BASE_DELAY", "0.05")
    monkeypatch.syspath_prepend(str(HERE))


@pytest.fixture
def write_pipeline(tmp_path):
    """Write a pipeline YAML into tmp_path from a dict (or YAML text) and return its path."""

    def write(spec, name="pipeline.yaml"):
        p = tmp_path / name
        p.write_text(textwrap.dedent(spec) if isinstance(spec, str) else yaml.safe_dump(spec, sort_keys=False))
        return p

    return write
