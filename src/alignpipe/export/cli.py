"""The command line of exports: `alignpipe export PLATFORM PIPELINE -o DIR` and `alignpipe stage exec` (what
every exported task runs). Registered on the main app by alignpipe.cli; no logic of its own."""

from __future__ import annotations

import typer
from rich.console import Console

from alignpipe.pipeline.errors import UserError

out = Console(highlight=False, soft_wrap=True)


def export(
    platform: str = typer.Argument(..., help="kfp, airflow, prefect, metaflow or dvc"),
    pipeline: str = typer.Argument(..., help="pipeline YAML (the exported tasks load it from this path)"),
    out_dir: str = typer.Option(..., "--out", "-o", help="directory to write the platform's files into"),
    force: bool = typer.Option(False, "--force", help="overwrite the exported files in a non-empty directory"),
    alignpipe: str = typer.Option("alignpipe", "--alignpipe", help="the alignpipe executable tasks run (a name "
                                  "on the platform's PATH, or an absolute path)"),
    workspace: str | None = typer.Option(None, "--workspace", "-w", help="overrides the spec's workspace"),
    images: list[str] = typer.Option([], "--image", help="container image of every stage (IMAGE) or of one "
                                     "(STAGE=IMAGE), for KFP and Airflow's KubernetesPodOperator (repeatable)"),
) -> None:
    """Write the pipeline as a platform's own files: each stage a task running `alignpipe stage exec`."""
    from alignpipe import api

    written = api.export(platform, pipeline, out_dir, force=force, alignpipe=alignpipe, workspace=workspace,
                         images=_images(images))
    for path in written:
        out.print(f"wrote {path}")


def _images(items: list[str]) -> dict[str, str]:
    images = {}
    for it in items:
        stage, sep, image = it.partition("=")
        if sep and (not stage or not image):
            raise UserError(f"--image {it!r}: expected IMAGE or STAGE=IMAGE")
        images[stage if sep else "*"] = image if sep else it
    return images


def stage_exec(
    pipeline: str = typer.Argument(..., help="pipeline YAML"),
    stage: str = typer.Argument(..., help="the stage to run"),
    workspace: str | None = typer.Option(None, "--workspace", "-w", help="overrides the spec's workspace"),
    platform: str = typer.Option("cli", "--platform", help="the workflow platform running this task"),
    platform_run_id: str | None = typer.Option(None, "--platform-run-id", help="the platform's run id"),
    params_file: str | None = typer.Option(None, "--params-file", help="YAML {stage: params} replacing the spec's "
                                           "params of those stages (DVC's params.yaml)"),
    outputs_file: str | None = typer.Option(None, "--outputs-file", help="write the stage's artifact ids here"),
    wait: bool = typer.Option(False, "--wait", help="wait for a run or gc holding the workspace"),
    retry_here: bool = typer.Option(False, "--retry-here", help="retry as `alignpipe run` does (the spec's "
                                    "retries, exponential backoff), for platforms without retries"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print only failures and the result"),
    as_json: bool = typer.Option(False, "--json", help="JSON lines events on stdout"),
) -> None:
    """Run ONE stage as a platform task: upstream outputs from the cache, the workspace shared with sibling tasks,
    the platform and its run id recorded. Exit 0 done, 1 failed, 2 bad input or an upstream stage not run yet."""
    from alignpipe.export.task import exec_stage, load_for_platform
    from alignpipe.progress import make_reporter

    pipe = load_for_platform(pipeline, params_file)
    reporter = make_reporter(quiet, as_json)
    try:
        result = exec_stage(pipe, stage, workspace=workspace, platform=platform, platform_run_id=platform_run_id,
                            outputs_file=outputs_file, report=reporter, wait=wait,
                            retry_here=retry_here)
    finally:
        reporter.close()
    s = result.stages[stage]
    outputs = ", ".join(f"{k} {v[:12]}" for k, v in s.outputs.items()) or "-"
    out.print(f"{stage} {s.state} ({platform} run {platform_run_id or '-'}, alignpipe run {result.run_id}): {outputs}")
    raise typer.Exit(result.exit_code)


def register(app: typer.Typer, stage_app: typer.Typer) -> None:
    app.command("export")(export)
    stage_app.command("exec")(stage_exec)
