"""The distributed tests: torch-free rank stages (`rankstages:NAME`) import from here in every rank process."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _ranks_env(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("ALIGNPIPE_RETRY_BASE_DELAY", "0.05")
    monkeypatch.syspath_prepend(str(HERE))


@dataclass(frozen=True)
class Upstream:
    root: Path
    ws: Path
    result: dict


@pytest.fixture(scope="session")
def upstream(tmp_path_factory) -> Upstream:
    """The shortened built-in pipeline up to reward, every stage one process: a workspace the multi-process tests
    copy and rerun stages in (their 1-process reference)."""
    from dp_util import alignpipe, result, spec_file

    root = tmp_path_factory.mktemp("upstream")
    ws = root / "ws1"
    return Upstream(root, ws, result(alignpipe("run", spec_file(root, ws), "--until", "reward", "--json")))


@pytest.fixture(scope="session")
def colocated_ppo(upstream) -> dict[str, str]:
    """The ppo stage's outputs with its four models in one process, on a copy of the upstream workspace."""
    import shutil

    from dp_util import alignpipe, result, spec_file

    ws = upstream.root / "ppo-colocated"
    shutil.copytree(upstream.ws, ws)
    res = result(alignpipe("run", spec_file(upstream.root, ws), "--only", "ppo", "--json"))
    return res["stages"]["ppo"]["outputs"]
