"""Fixtures of the integration tests: one tiny RLHF workspace.

(This directory is on sys.path, like tests/stages: `integ_util` imports without help; the pipeline is
tests/pipelines.py's MINI.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from alignpipe import api
from pipelines import MINI, rlhf_spec


@pytest.fixture(scope="session")
def tiny_ws(tmp_path_factory) -> Path:
    """A workspace holding one finished run of the tiny RLHF pipeline (πSFT, Rφ, πRLHF and their data)."""
    ws = tmp_path_factory.mktemp("integrations") / "ws"
    result = api.run(api.from_dict(rlhf_spec(ws, MINI)))
    assert result.status == "done", {n: s.error for n, s in result.stages.items() if s.error}
    return ws
