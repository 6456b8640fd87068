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


MLFLOW_HELP = "MLflow tracking URI (default: $ALIGNPIPE_MLFLOW)"


def _uri(mlflow: str | None) -> str:
    from alignpipe.integrations.mlflow import tracking_uri
    from alignpipe.pipeline.errors import UserError

    uri = tracking_uri(mlflow, None)
    if uri is None:
        raise UserError("no MLflow tracking URI: pass --mlflow URI or set $ALIGNPIPE_MLFLOW")
    return uri


def register(ref: str = typer.Argument(..., help=REF_HELP),
             name: str = typer.Option(..., "--name", help="registered model name (created if new)"),
             alias: str | None = typer.Option(None, "--alias", help="alias for the version, e.g. candidate"),
             mlflow: str | None = typer.Option(None, "--mlflow", help=MLFLOW_HELP),
             workspace: str | None = typer.Option(None, "--workspace", "-w", help=WS_HELP)) -> None:
    """Register a model artifact in the MLflow model registry (the same artifact twice: the same version)."""
    from alignpipe.integrations import mlflow as ml
    from alignpipe.integrations.artifact import open_model

    uri = _uri(mlflow)
    m = open_model(_ws(workspace), ref)
    res = ml.register(m, name, uri, alias=alias)
    how = "registered" if res.created else "already registered"
    at = f" @{res.alias}" if res.alias else ""
    out.print(f"{how}: {m.role.symbol} {m.ref} {m.id[:12]} is {res.name} version {res.version}{at} "
              f"({m.task}; source {res.source})")


def models(name: str = typer.Argument(..., help="registered model name"),
           mlflow: str | None = typer.Option(None, "--mlflow", help=MLFLOW_HELP)) -> None:
    """The versions of a registered model: aliases, alignpipe artifact, role, producing stage and run."""
    from rich.table import Table

    from alignpipe.integrations import mlflow as ml

    t = Table("version", "aliases", "artifact", "role", "stage", "run", box=None, title=name)
    for v in ml.versions(name, _uri(mlflow)):
        t.add_row(v["version"], ",".join(v["aliases"]), v["artifact_id"][:12], v["role"], v["stage"], v["run_id"])
    out.print(t)


def push_dvc_command(ref: str, dvc: str, path: str | None, remote: str | None, workspace: str | None) -> None:
    """`alignpipe push REF --dvc REPO`: version an artifact in a DVC repository and push it to its DVC remote
    (one git commit of the .dvc file)."""
    from alignpipe.api import Workspace
    from alignpipe.integrations.dvc import push_dvc

    ws = Workspace(_ws(workspace))
    art = ws.show(ref)
    res = push_dvc(art, dvc, path, remote)
    out.print(f"pushed {art.kind} {art.producer.get('stage')}.{art.producer.get('output')} {art.id[:12]} to DVC "
              f"remote {res.remote}: {res.dvc_file.relative_to(Path(dvc).resolve())} in commit {res.commit[:12]}")
    out.print(f"elsewhere: `git pull && dvc pull {res.path.relative_to(Path(dvc).resolve())}`")


def add_commands(app: typer.Typer) -> None:
    for command in (publish, register, models):
        app.command()(command)
