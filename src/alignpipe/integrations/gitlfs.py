"""`alignpipe publish REF --git DIR`: a model artifact as a plain HF model directory in a git working tree, with
weights and tokenizer files in Git LFS, a model card (README.md) and the alignpipe manifest; one commit.

The working tree must be clean: a publish is one commit that can be reviewed, pushed or reverted, and a failure
midway restores the tree to its HEAD (files this publish wrote are removed or checked out again), so nothing is
left half-written. Files a previous publish left (listed in its manifest.json) and the new model no longer has
are removed, so the directory always holds exactly one model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from alignpipe.integrations.artifact import ModelArtifact
from alignpipe.integrations.gitutil import commit_all, git, require_clean, restore, work_tree
from alignpipe.integrations.modelcard import model_card
from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.store import MANIFEST

# Weights (every format transformers or torch writes) and tokenizer vocabularies: large or binary, so in LFS.
# Configs (config.json, tokenizer_config.json, generation_config.json, chat_template.jinja) stay in git, diffable.
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.msgpack", "*.onnx", "*.gguf",
                "tokenizer.json", "tokenizer.model", "*.spm", "*.tiktoken", "vocab.json", "vocab.txt", "merges.txt")
CARD = "README.md"


@dataclass(frozen=True)
class Published:
    directory: Path
    commit: str
    files: list[str]  # written, relative to the directory
    lfs: list[str]  # of those, the ones stored in LFS


def publish_git(m: ModelArtifact, target: str | os.PathLike, message: str | None = None) -> Published:
    """Write model `m` into the git working tree `target` (its top level or a subdirectory) and commit it."""
    target = Path(target).expanduser().resolve()
    _require_git_lfs()
    top = work_tree(target)
    require_clean(top, target, "publish")
    written: list[Path] = []
    try:
        files = _write_model(m, target, written)
        git(top, "lfs", "install", "--local")
        _track(top, target)
        written.append(top / ".gitattributes")
        git(top, "add", "--all", "--", str(target), str(top / ".gitattributes"))
        missing = [f for f in m.files() if _lfs_worthy(f) and not _in_lfs(top, target / f)]
        if missing:
            raise UserError(f"{target}: git lfs did not take {missing}; check `git lfs env` in that repository")
        msg = message or f"{m.role.symbol} {m.ref} {m.id[:12]} (alignpipe publish)"
        commit = commit_all(top, msg, m)
    except BaseException:
        restore(top, written)
        raise
    prefix = target.relative_to(top).as_posix() + "/"
    lfs = [n.removeprefix(prefix) for n in git(top, "lfs", "ls-files", "--name-only").stdout.splitlines()
           if prefix == "./" or n.startswith(prefix)]
    return Published(target, commit, files, sorted(lfs))


def _write_model(m: ModelArtifact, target: Path, written: list[Path]) -> list[str]:
    """Copy the artifact's files, the manifest and the card into target; drop a previous publish's leftovers."""
    previous = _previous_files(target)
    target.mkdir(parents=True, exist_ok=True)
    new = [*m.files(), MANIFEST, CARD]
    for rel in sorted(set(previous) - set(new)):
        (target / rel).unlink(missing_ok=True)
        written.append(target / rel)
    for rel in m.files():
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        written.append(dst)
        shutil.copyfile(m.path / rel, dst)
    written.append(target / MANIFEST)
    shutil.copyfile(m.path / MANIFEST, target / MANIFEST)
    written.append(target / CARD)
    (target / CARD).write_text(model_card(m), encoding="utf-8")
    return new


def _previous_files(target: Path) -> list[str]:
    try:
        return [f["path"] for f in json.loads((target / MANIFEST).read_text())["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _track(top: Path, target: Path) -> None:
    """LFS patterns for target (relative to the repository root when target is a subdirectory)."""
    prefix = target.relative_to(top).as_posix()
    patterns = [p if prefix == "." else f"{prefix}/{p}" for p in LFS_PATTERNS]
    git(top, "lfs", "track", "--", *patterns)


def _lfs_worthy(rel: str) -> bool:
    from fnmatch import fnmatch

    return any(fnmatch(Path(rel).name, p) for p in LFS_PATTERNS)


def _in_lfs(top: Path, path: Path) -> bool:
    """Whether git's attributes send path through the LFS filter."""
    out = git(top, "check-attr", "filter", "--", os.path.relpath(path, top)).stdout
    return out.strip().endswith(": filter: lfs")


def _require_git_lfs() -> None:
    if shutil.which("git") is None:
        raise UserError("git is not installed; install it (Debian: apt-get install git git-lfs)")
    if subprocess.run(["git", "lfs", "version"], capture_output=True).returncode != 0:
        raise UserError("git-lfs is not installed; install it (Debian: apt-get install git-lfs, or "
                        "bash scripts/system_deps.sh)")
