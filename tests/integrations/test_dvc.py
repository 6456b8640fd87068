"""`alignpipe push REF --dvc REPO` with the real DVC (side env .venvs/dvc): a model from the store lands in a DVC
repo, goes to a local DVC remote, and `dvc pull` in a fresh clone gives byte-identical files."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from integ_util import cli
from mlflow_server import side_env

from alignpipe.api import Workspace


@pytest.fixture(scope="session")
def dvc_bin() -> Path:
    return side_env("dvc") / "dvc"


def run(cwd: Path, *cmd: str) -> str:
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert res.returncode == 0, f"{cmd}: {res.stdout}{res.stderr}"
    return res.stdout


@pytest.fixture
def dvc_repo(tmp_path, dvc_bin) -> tuple[Path, Path, Path]:
    """(bare git remote, a clone that is a DVC repo with a local default remote, the DVC remote's directory)."""
    origin, repo, storage = tmp_path / "origin.git", tmp_path / "repo", tmp_path / "dvc-storage"
    run(tmp_path, "git", "init", "-q", "--bare", str(origin))
    run(tmp_path, "git", "clone", "-q", str(origin), str(repo))
    run(repo, "git", "config", "user.email", "test@localhost")
    run(repo, "git", "config", "user.name", "test")
    run(repo, str(dvc_bin), "init", "-q")
    run(repo, str(dvc_bin), "remote", "add", "-d", "storage", str(storage))
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "dvc init")
    return origin, repo, storage


def test_push_then_dvc_pull_in_a_fresh_clone_is_byte_identical(tiny_ws, dvc_repo, dvc_bin, tmp_path):
    origin, repo, storage = dvc_repo
    res = cli("push", "ppo.policy", "--dvc", str(repo), "-w", str(tiny_ws), env={"ALIGNPIPE_DVC": str(dvc_bin)})
    assert res.returncode == 0, res.stderr
    assert "to DVC remote storage: alignpipe/ppo.policy.dvc" in res.stdout
    assert run(repo, "git", "status", "--porcelain") == ""
    run(repo, "git", "push", "-q", "origin", "HEAD")
    assert any(storage.rglob("*"))  # the objects are in the DVC remote

    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    assert not (clone / "alignpipe" / "ppo.policy").exists()  # git holds only the .dvc file
    run(clone, str(dvc_bin), "pull", "-q", "alignpipe/ppo.policy")
    art = Workspace(tiny_ws).show("ppo.policy")
    pulled = clone / "alignpipe" / "ppo.policy"
    want = sorted(p.relative_to(art.path) for p in art.path.rglob("*") if p.is_file())
    assert sorted(p.relative_to(pulled) for p in pulled.rglob("*") if p.is_file()) == want
    for rel in want:
        assert (pulled / rel).read_bytes() == (art.path / rel).read_bytes(), rel


@pytest.mark.parametrize(("case", "message"), [
    ("not-dvc", r"not a DVC repository \(no .dvc directory\); run `git init && dvc init` there"),
    ("dirty", r"uncommitted changes \(\?\? notes.txt\); commit or stash them first"),
    ("no-remote", r"has no default remote; add one"),
], ids=["not-a-dvc-repo", "dirty", "no-remote"])
def test_bad_input_is_one_line_exit_2_and_nothing_is_written(tiny_ws, dvc_repo, dvc_bin, tmp_path, case, message):
    _, repo, _ = dvc_repo
    if case == "not-dvc":
        repo = tmp_path / "plain"
        repo.mkdir()
    elif case == "dirty":
        (repo / "notes.txt").write_text("wip")
    else:
        run(repo, str(dvc_bin), "remote", "remove", "storage")
        run(repo, "git", "commit", "-qam", "no remote")
    before = sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if ".git/" not in str(p))
    res = cli("push", "sft.model", "--dvc", str(repo), "-w", str(tiny_ws), env={"ALIGNPIPE_DVC": str(dvc_bin)})
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert re.search(message, res.stderr), res.stderr
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if ".git/" not in str(p)) == before
