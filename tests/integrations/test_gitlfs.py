"""`alignpipe publish REF --git DIR` with the real git and git-lfs: push to a bare repository, clone, load.

Needs Debian's git-lfs (scripts/system_deps.sh installs it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from integ_util import cli, load_in_fresh_process

from alignpipe.api import Workspace


def git(cwd: Path, *args: str) -> str:
    res = subprocess.run(["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"git {args}: {res.stderr}"
    return res.stdout


@pytest.fixture
def repo(tmp_path) -> tuple[Path, Path]:
    """(bare 'remote', a clone of it to publish into)."""
    remote, work = tmp_path / "models.git", tmp_path / "work"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(tmp_path, "clone", "-q", str(remote), str(work))
    git(work, "config", "user.email", "test@localhost")
    git(work, "config", "user.name", "test")
    return remote, work


def fresh_clone(remote: Path, dest: Path) -> Path:
    """Clone and fetch the LFS objects (whether or not git-lfs is configured system-wide)."""
    git(dest.parent, "clone", "-q", str(remote), str(dest))
    git(dest, "lfs", "install", "--local")
    git(dest, "lfs", "pull")
    return dest


def test_publish_pushes_weights_through_lfs_and_a_fresh_clone_loads(tiny_ws, repo, tmp_path):
    remote, work = repo
    res = cli("publish", "ppo.policy", "--git", str(work), "-w", str(tiny_ws))
    assert res.returncode == 0, res.stderr
    assert "in LFS: model.safetensors, tokenizer.json" in res.stdout
    git(work, "push", "-q", "origin", "HEAD")

    clone = fresh_clone(remote, tmp_path / "clone")
    art = Workspace(tiny_ws).show("ppo.policy")
    for f in art.manifest["files"]:  # byte-identical to the store's artifact
        assert (clone / f["path"]).read_bytes() == (art.path / f["path"]).read_bytes(), f["path"]
    assert json.loads((clone / "manifest.json").read_text())["id"] == art.id
    # in git the weights and tokenizer are LFS pointers; configs are plain files
    assert git(clone, "show", "HEAD:model.safetensors").startswith("version https://git-lfs")
    assert git(clone, "show", "HEAD:tokenizer.json").startswith("version https://git-lfs")
    assert git(clone, "show", "HEAD:config.json").lstrip().startswith("{")
    assert set(git(clone, "lfs", "ls-files", "--name-only").split()) == {"model.safetensors", "tokenizer.json"}

    loaded = load_in_fresh_process(clone)[str(clone)]
    assert loaded["auto"] == "AutoModelForCausalLM" and loaded["chat_template"]
    assert loaded["generation_config"]["eos_token_id"] == loaded["eos"] != loaded["pad"]
    card = (clone / "README.md").read_text()
    assert "pipeline_tag: text-generation" in card and "# πRLHF" in card and "β =" in card and "KL to πSFT" in card
    assert art.id in card and Workspace(tiny_ws).resolve("sft.model") in card  # lineage ids
    assert "## License" in card and "\nlicense:" not in card  # left to the user


def test_each_role_publishes_to_a_directory_the_auto_classes_load(tiny_ws, repo):
    _, work = repo
    for ref in ("sft.model", "reward.model", "ppo.policy"):
        res = cli("publish", ref, "--git", str(work / ref.split(".")[0]), "-w", str(tiny_ws))
        assert res.returncode == 0, res.stderr
    assert len(git(work, "log", "--oneline").splitlines()) == 3  # one commit per publish
    loaded = load_in_fresh_process(work / "sft", work / "reward", work / "ppo")
    assert loaded[str(work / "reward")]["auto"] == "AutoModelForSequenceClassification"
    assert all(v["chat_template"] for v in loaded.values())
    assert loaded[str(work / "sft")]["generation_config"] is not None
    cards = {d: (work / d / "README.md").read_text() for d in ("sft", "reward", "ppo")}
    assert "# πSFT" in cards["sft"] and "# Rφ" in cards["reward"] and "# πRLHF" in cards["ppo"]
    norm = Workspace(tiny_ws).show("reward").manifest["summary"]["normalization"]
    assert "**Normalization.** S = gain · (raw + bias)" in cards["reward"]
    assert f"bias = {norm['bias']:.4g}, gain = {norm['gain']:.4g}" in cards["reward"]
    assert "`*.safetensors`" not in git(work, "check-attr", "filter", "--", "reward/model.safetensors")
    assert git(work, "check-attr", "filter", "--", "reward/model.safetensors").strip().endswith("filter: lfs")


def test_republishing_replaces_the_previous_model_and_keeps_nothing_stale(tiny_ws, repo):
    _, work = repo
    assert cli("publish", "sft.model", "--git", str(work), "-w", str(tiny_ws)).returncode == 0
    (work / "stale.bin").write_bytes(b"x")  # pretend the previous model had a file the new one lacks
    manifest = json.loads((work / "manifest.json").read_text())
    manifest["files"].append({"path": "stale.bin", "size": 1, "sha256": "0"})
    (work / "manifest.json").write_text(json.dumps(manifest))
    git(work, "add", "-A")
    git(work, "commit", "-qm", "a previous publish")
    assert cli("publish", "ppo.policy", "--git", str(work), "-w", str(tiny_ws)).returncode == 0
    art = Workspace(tiny_ws).show("ppo.policy")
    tracked = set(git(work, "ls-files").split())
    assert tracked == {f["path"] for f in art.manifest["files"]} | {"manifest.json", "README.md", ".gitattributes"}


def test_a_dirty_target_is_refused_and_nothing_is_written(tiny_ws, repo):
    _, work = repo
    (work / "notes.txt").write_text("work in progress")
    res = cli("publish", "sft.model", "--git", str(work), "-w", str(tiny_ws))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "uncommitted changes (?? notes.txt)" in res.stderr
    assert "commit or stash them first" in res.stderr and "Traceback" not in res.stderr
    assert sorted(p.name for p in work.iterdir()) == [".git", "notes.txt"]


def test_a_failed_commit_leaves_the_tree_as_it_was(tiny_ws, repo):
    _, work = repo
    (work / "README.md").write_text("the team's own readme\n")
    git(work, "add", "README.md")
    git(work, "commit", "-qm", "readme")
    hook = work / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'policy: no weights on Fridays' >&2\nexit 1\n")
    hook.chmod(0o755)
    res = cli("publish", "sft.model", "--git", str(work), "-w", str(tiny_ws))
    assert res.returncode == 2 and "git commit" in res.stderr, res.stderr
    assert git(work, "status", "--porcelain", "--untracked-files=all") == ""
    assert (work / "README.md").read_text() == "the team's own readme\n"
    assert git(work, "log", "--oneline").count("\n") == 1


@pytest.mark.parametrize(("ref", "target", "message"), [
    ("data.demos", "repo", r"data.demos is a dataset artifact .* not a model; give a model artifact"),
    ("sft.model", "plain", r"not inside a git working tree; `git init` it"),
    ("nosuchthing", "repo", r"'nosuchthing' is no artifact id, id prefix, tag or stage.output"),
], ids=["non-model", "not-a-repo", "unknown-ref"])
def test_bad_input_is_one_line_exit_2(tiny_ws, repo, tmp_path, ref, target, message):
    import re

    _, work = repo
    where = work if target == "repo" else tmp_path / "plain"
    where.mkdir(exist_ok=True)
    res = cli("publish", ref, "--git", str(where), "-w", str(tiny_ws))
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert re.search(message, res.stderr), res.stderr
    assert sorted(p.name for p in where.iterdir()) == ([".git"] if target == "repo" else [])
