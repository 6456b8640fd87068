"""Git plumbing shared by the integrations that write into a working tree (gitlfs publish, dvc push)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from alignpipe.pipeline.errors import UserError

IDENTITY = ("-c", "user.name=alignpipe", "-c", "user.email=alignpipe@localhost")  # only when git has none


def require_clean(top: Path, target: Path, what: str) -> None:
    """UserError if the working tree has uncommitted changes: a {what} must be one reviewable commit."""
    dirty = git(top, "status", "--porcelain", "--untracked-files=all").stdout.strip()
    if dirty:
        lines = dirty.splitlines()
        more = f" and {len(lines) - 1} more" if len(lines) > 1 else ""
        raise UserError(f"{target}: the git working tree has uncommitted changes ({lines[0].strip()}{more}); "
                        f"commit or stash them first, so that the {what} is one reviewable commit")


def commit_all(top: Path, message: str, m: Any) -> str:
    """Commit what is staged, naming the artifact in the body; returns the commit sha."""
    git(top, "commit", "-q", "-m", message, "-m", f"alignpipe artifact {m.id}\nproducer {m.ref} run "
        f"{m.producer.get('run_id')}", options=_identity(top))
    return git(top, "rev-parse", "HEAD").stdout.strip()


def restore(top: Path, written: list[Path]) -> None:
    """Undo a failed publish: unstage, check out what HEAD had, remove what it did not."""
    subprocess.run(["git", "-C", str(top), "reset", "-q"], capture_output=True)
    for path in written:
        rel = os.path.relpath(path, top)
        known = subprocess.run(["git", "-C", str(top), "cat-file", "-e", f"HEAD:{rel}"], capture_output=True)
        if known.returncode == 0:
            subprocess.run(["git", "-C", str(top), "checkout", "-q", "HEAD", "--", rel], capture_output=True)
        else:
            path.unlink(missing_ok=True)


def work_tree(target: Path) -> Path:
    """The top level of the git working tree holding target (which may not exist yet)."""
    probe = target
    while not probe.exists():
        probe = probe.parent
    res = subprocess.run(["git", "-C", str(probe), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    if res.returncode != 0 or not probe.is_dir():
        raise UserError(f"{target}: not inside a git working tree; `git init` it or `git clone` your model "
                        "repository there first")
    return Path(res.stdout.strip()).resolve()


def _identity(top: Path) -> tuple[str, ...]:
    has = subprocess.run(["git", "-C", str(top), "config", "user.email"], capture_output=True).returncode == 0
    return () if has else IDENTITY


def git(top: Path, *args: str, options: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    res = subprocess.run(["git", "-C", str(top), *options, *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise UserError(f"{top}: `git {' '.join(args[:3])}` failed: {res.stderr.strip().splitlines()[-1:]}")
    return res
