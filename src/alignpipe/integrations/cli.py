"""The integrations' commands (publish, register, push, pull), added to the main CLI by `add_commands(app)`.

Thin like alignpipe.cli: parse, call the integration, print. Nothing heavy is imported at start-up.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
WS_HELP = "workspace directory (default: $ALIGNPIPE_WORKSPACE or ./workspace)"
REF_HELP = "a model artifact: id, id prefix, tag, or stage[.output] of the latest run"


def _ws(ws: str | None) -> Path:
    return Path(ws or os.environ.get("ALIGNPIPE_WORKSPACE") or "workspace")


def publish(ref: str = typer.Argument(..., help=REF_HELP),
            git: str = typer.Option(..., "--git", help="a clean git working tree (or a directory in one) to write "
                                    "the model into; weights and tokenizer files go to Git LFS"),
            message: str | None = typer.Option(None, "--message", "-m", help="commit message"),
            workspace: str | None = typer.Option(None, "--workspace", "-w", help=WS_HELP)) -> None:
    """Publish a model as a plain HF directory (model card, manifest, Git LFS) in one git commit."""
    from alignpipe.integrations.artifact import open_model
    from alignpipe.integrations.gitlfs import publish_git

    m = open_model(_ws(workspace), ref)
    res = publish_git(m, git, message)
    out.print(f"published {m.role.symbol} {m.ref} {m.id[:12]} to {res.directory} in commit {res.commit[:12]}: "
              f"{len(res.files)} files, in LFS: {', '.join(res.lfs)}")
    out.print("push it with `git push` (LFS objects go with it)")


def add_commands(app: typer.Typer) -> None:
    app.command()(publish)
