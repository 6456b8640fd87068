"""The distributed tests: torch-free rank stages (`rankstages:NAME`) import from here in every rank process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _ranks_env(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("ALIGNPIPE_RETRY_BASE_DELAY", "0.05")
    monkeypatch.syspath_prepend(str(HERE))
