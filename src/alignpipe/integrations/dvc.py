"""`alignpipe push REF --dvc REPO`: an artifact directory (files + manifest.json) versioned in a DVC repository and
sent to its DVC remote, in one git commit of the `.dvc` file.

    alignpipe push ppo.policy --dvc ~/team-models [--path models/policy] [--remote storage]
    # elsewhere: git clone ... && dvc pull models/policy   -> the same bytes, manifest.json included

The steps are DVC's own: copy the directory into the repo, `dvc add` it, `git add` the .dvc file and .gitignore,
`dvc push` to the remote, commit. The repo's git tree must be clean; a failure at any step removes what this push
wrote. The `dvc` executable comes from $ALIGNPIPE_DVC, else PATH, else the side env .venvs/dvc
(`bash scripts/setup_env.sh dvc`): DVC's dependencies do not mix with the main venv's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from alignpipe.integrations.gitutil import commit_all, git, require_clean, restore, work_tree
from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.store import Artifact

INSTALL = "pip install dvc (or `bash scripts/setup_env.sh dvc`, or set $ALIGNPIPE_DVC to a dvc executable)"


@dataclass(frozen=True)
class Pushed:
    path: Path  # the directory in the repo
    dvc_file: Path
    commit: str
    remote: str


def dvc_executable() -> str:
    found = os.environ.get("ALIGNPIPE_DVC") or shutil.which("dvc")
    if found is None:
        side = Path(__file__).resolve().parents[3] / ".venvs" / "dvc" / "bin" / "dvc"
        found = str(side) if side.is_file() else None
    if found is None:
        raise UserError(f"the dvc command is not installed: {INSTALL}")
    return found


def push_dvc(art: Artifact, repo: str | os.PathLike, path: str | None = None, remote: str | None = None) -> Pushed:
    """Add artifact `art` to the DVC repo at `repo` (under `path`, default alignpipe/STAGE.OUTPUT), push it to the
    DVC remote and commit the .dvc file."""
    repo = Path(repo).expanduser().resolve()
    if not (repo / ".dvc").is_dir():
        raise UserError(f"{repo}: not a DVC repository (no .dvc directory); run `git init && dvc init` there, "
                        "or pass the root of your DVC repository")
    dvc = dvc_executable()
    top = work_tree(repo)
    require_clean(top, repo, "push")
    remote = remote or _default_remote(dvc, repo)
    rel = path or f"alignpipe/{art.producer.get('stage')}.{art.producer.get('output')}"
    dest = (repo / rel).resolve()
    if not dest.is_relative_to(repo) or dest == repo:
        raise UserError(f"--path {rel!r} must be a directory inside {repo}")
    dvc_file = dest.with_name(dest.name + ".dvc")
    written = [dvc_file, dest.parent / ".gitignore"]
    try:
        if dest.exists():
            shutil.rmtree(dest)  # a previous push of this path: DVC keeps that version in its cache and remote
        shutil.copytree(art.path, dest)
        written.append(dest)
        _run(dvc, repo, "add", str(dest))
        git(top, "add", "--", str(dvc_file), str(dest.parent / ".gitignore"))
        _run(dvc, repo, "push", "--remote", remote, str(dvc_file))
        commit = commit_all(top, f"{art.producer.get('stage')}.{art.producer.get('output')} {art.id[:12]} "
                                 f"(alignpipe push to DVC remote {remote})", _Named(art))
    except BaseException:
        restore(top, [p for p in written if p != dest])
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return Pushed(dest, dvc_file, commit, remote)


@dataclass(frozen=True)
class _Named:
    """What commit_all needs to name an artifact in the commit message."""

    art: Artifact

    @property
    def id(self) -> str:
        return self.art.id

    @property
    def ref(self) -> str:
        return f"{self.art.producer.get('stage')}.{self.art.producer.get('output')}"

    @property
    def producer(self) -> dict:
        return self.art.producer


def _default_remote(dvc: str, repo: Path) -> str:
    try:
        name = _run(dvc, repo, "remote", "default").strip()
    except UserError:
        name = ""
    if not name or " " in name:
        raise UserError(f"{repo}: the DVC repository has no default remote; add one (`dvc remote add -d NAME URL`) "
                        "or pass --remote NAME")
    return name


def _run(dvc: str, repo: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    res = subprocess.run([dvc, *args], cwd=repo, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        last = (res.stderr.strip() or res.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise UserError(f"{repo}: `dvc {' '.join(args[:2])}` failed: {last[0]}")
    return res.stdout
