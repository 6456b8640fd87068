"""`alignpipe report` and `alignpipe watch`, and the report `alignpipe run` writes when it ends (thin: parse, call
alignpipe.report, print). Registered on the main app by alignpipe.cli."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer

from alignpipe.pipeline.errors import UserError

WS_HELP = "workspace directory (default: $ALIGNPIPE_WORKSPACE or ./workspace)"


def _ws(ws: str | None) -> Path:
    return Path(ws or os.environ.get("ALIGNPIPE_WORKSPACE") or "workspace")


def report(
    runs: list[str] = typer.Argument(None, metavar="[RUN] | RUN_A RUN_B",
                                     help="run id or prefix, or a workspace directory (its latest run); default: "
                                          "the latest run. With --compare: two runs"),
    out: str | None = typer.Option(None, "--out", "-o", help="HTML file to write (default: WORKSPACE/report.html)"),
    compare: bool = typer.Option(False, "--compare", help="put two runs' curves and tables side by side"),
    workspace: str | None = typer.Option(None, "--workspace", "-w", help=WS_HELP),
) -> None:
    """Write one self-contained HTML report of a run: timeline, lineage, curves, evaluation, samples, findings."""
    from alignpipe.report import write_report

    runs = runs or []
    if compare and len(runs) != 2:
        raise UserError(f"report --compare: give two runs (RUN_A RUN_B), got {len(runs)}; see `alignpipe runs`")
    if not compare and len(runs) > 1:
        raise UserError(f"report: give at most one run, got {len(runs)} ({' '.join(runs)}); to put two side by side "
                        "pass --compare")
    path = write_report(_ws(workspace), runs[0] if runs else None, out, compare=runs[1] if compare else None)
    typer.echo(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")


def watch(
    run: str | None = typer.Argument(None, metavar="[RUN]", help="run id or prefix (default: the latest run; "
                                                                 "waits for one to start)"),
    workspace: str | None = typer.Option(None, "--workspace", "-w", help=WS_HELP),
    interval: float = typer.Option(0.5, "--interval", help="seconds between refreshes"),
) -> None:
    """A live terminal view of a running pipeline: stage states, progress, latest metrics, ETA; exits when the run
    ends (exit code 0 done, 1 failed, 130 interrupted)."""
    from alignpipe.report.watch import watch as watch_run

    raise typer.Exit(watch_run(_ws(workspace), run, interval))


def after_run(result: Any, quiet: bool, as_json: bool) -> None:
    """Write WORKSPACE/report.html for the run that just ended. A run whose every stage was a cache hit of the
    artifacts the existing report shows keeps that report (it says when they were really made) and costs a no-op
    rerun nothing. A report that cannot be written is a warning, never a failed run."""
    from alignpipe.report import DEFAULT_NAME, outputs_digest, report_digest, write_report

    path = Path(result.workspace) / DEFAULT_NAME
    kept = (all(s.state == "cached" for s in result.stages.values())
            and report_digest(path) == outputs_digest({n: s.outputs for n, s in result.stages.items()}))
    if not kept:
        try:
            write_report(result.workspace, result.run_id, path)
        except Exception as e:  # the run's own outcome and exit code must stand whatever the report does
            from alignpipe.progress import err

            err(f"report not written: {type(e).__name__}: {e}")
            return
    if as_json:
        print(json.dumps({"event": "report", "run_id": result.run_id, "path": str(path), "kept": kept}), flush=True)
    elif not quiet:
        typer.echo(f"report {path}" + (" (kept: every stage was a cache hit of the run it shows)" if kept else ""))
