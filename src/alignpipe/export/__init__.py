"""Export a validated pipeline to a workflow platform: Kubeflow Pipelines, Airflow, Prefect, Metaflow, DVC.

    alignpipe export dvc pipeline.yaml -o dvc/          # dvc.yaml + params.yaml
    alignpipe.api.export("airflow", "pipeline.yaml", "dags/")

`ir.build` turns the validated pipeline into plain data; each platform module is a pure `render(ir)` returning
{filename: text}; `write` puts the files in place. Each generated task runs `alignpipe stage exec` (task.py).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from alignpipe.pipeline.errors import UserError

if TYPE_CHECKING:  # the CLI imports this package at start-up: no pydantic here
    from alignpipe.export.ir import PipelineIR

PLATFORMS = ("kfp", "airflow", "prefect", "metaflow", "dvc")
IMAGE_PLATFORMS = ("kfp", "airflow")  # the ones whose files can name a container image per stage


def check_platform(platform: str, images: dict[str, str] | None) -> None:
    if platform not in PLATFORMS:
        raise UserError(f"export: unknown platform {platform!r}; expected one of: {', '.join(PLATFORMS)}")
    if images and platform not in IMAGE_PLATFORMS:
        raise UserError(f"export {platform}: --image is not supported ({platform}'s files name no container image "
                        f"per stage); only {' and '.join(IMAGE_PLATFORMS)} take it")


def render(platform: str, ir: PipelineIR) -> dict[str, str]:
    check_platform(platform, None)
    return importlib.import_module(f"alignpipe.export.{platform}").render(ir)


def write(files: dict[str, str], out: str | os.PathLike, force: bool = False) -> list[Path]:
    """Write the files under `out`. A non-empty `out` is refused unless `force`; even then only the files named
    here are replaced (a DVC repo's .dvc/ and dvc.lock, or anything else there, stays)."""
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise UserError(f"export: {root} is a file; give a directory with -o")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise UserError(f"export: {root} exists and is not empty; pass --force to overwrite the exported files "
                        "(other files there are kept), or choose another -o")
    from alignpipe.pipeline.store import LocalFS

    written = []
    for rel, text in files.items():
        path = root / rel
        LocalFS().write_text_atomic(path, text)
        written.append(path)
    return written
