from __future__ import annotations

import os
from pathlib import Path

import pytest

ENGINE_TESTS = Path(__file__).resolve().parent.parent / "engine"


@pytest.fixture
def teststages(monkeypatch):
    """Stage processes (and this process) import the engine tests' `teststages` module."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ENGINE_TESTS), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("ALIGNPIPE_RETRY_BASE_DELAY", "0.05")
    monkeypatch.syspath_prepend(str(ENGINE_TESTS))
