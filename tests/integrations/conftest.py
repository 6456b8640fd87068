"""Fixtures of the integration tests: one tiny RLHF workspace.

(This directory is on sys.path, like tests/stages: `rlhf_tiny` and `integ_util` import without help.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from rlhf_tiny import tiny_rlhf_spec

from alignpipe import api


@pytest.fixture(scope="session")
def tiny_ws(tmp_path_factory) -> Path:
    """A workspace holding one finished run of the tiny RLHF pipeline (πSFT, Rφ, πRLHF and their data)."""
    ws = tmp_path_factory.mktemp("integrations") / "ws"
    result = api.run(api.from_dict(tiny_rlhf_spec(ws)))
    assert result.status == "done", {n: s.error for n, s in result.stages.items() if s.error}
    return ws
