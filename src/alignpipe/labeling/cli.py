"""`alignpipe label ...`: the labeling job of a `judge: human` stage from a shell.

A job is found by stage name in a workspace (its newest attempt's work dir) or by `--db PATH` (what the stage
prints; also how a manual `alignpipe stage run label` job is reached). Nothing here imports FastAPI until
`serve` needs it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from alignpipe.pipeline.errors import UserError

app = typer.Typer(help="Human preference labeling: invite annotators, serve the page, export and import.",
                  pretty_exceptions_enable=False, no_args_is_help=True)

STAGE = typer.Option(None, "--stage", "-s", help="the label stage (its newest attempt in the workspace)")
WORKSPACE = typer.Option(None, "--workspace", "-w", help="workspace (default: $ALIGNPIPE_WORKSPACE or ./workspace)")
DB = typer.Option(None, "--db", help="the job's labels.db (printed by the stage), instead of --stage")
FORMATS = "label-studio | argilla"


def _db_path(stage: str | None, workspace: str | None, db: str | None) -> Path:
    if db:
        path = Path(db)
    elif stage:
        from alignpipe.labeling.judge import db_path
        from alignpipe.pipeline.journal import Journal
        from alignpipe.pipeline.store import Store

        ws = Path(workspace or os.environ.get("ALIGNPIPE_WORKSPACE") or "workspace").resolve()
        journal = Journal(ws, readonly=True)
        try:
            attempt = journal.last_attempt(stage)
        finally:
            journal.close()
        if attempt is None or not attempt.fingerprint:
            raise UserError(f"workspace {ws}: stage {stage!r} never started; run the pipeline (`alignpipe run`) first")
        path = db_path(Store(ws).work_root / attempt.fingerprint)
    else:
        raise UserError("give the labeling job: --stage NAME [-w WORKSPACE], or --db PATH")
    if not path.is_file():
        raise UserError(f"{path}: no labeling job there (the stage has not started labeling, or it finished and "
                        "published: its judgments are in the preference artifact's judgments.jsonl)")
    return path


def _open(stage: str | None, workspace: str | None, db: str | None):
    from alignpipe.labeling.db import LabelDB

    return LabelDB(_db_path(stage, workspace, db))


@app.command()
def invite(name: str = typer.Argument(..., help="the annotator's name (letters, digits, . _ @ : -)"),
           admin: bool = typer.Option(False, "--admin", help="may see agreement and finish labeling"),
           stage: str | None = STAGE, workspace: str | None = WORKSPACE, db: str | None = DB) -> None:
    """Create (or replace) an annotator's token and print their link."""
    job = _open(stage, workspace, db)
    try:
        token = job.invite(name, admin=admin)
    except ValueError as e:
        raise UserError(str(e)) from None
    url = job.setting("url")
    print(f"{name}: {url or '<page address>/'}login?t={token}")
    print(f"token (scripts: 'Authorization: Bearer TOKEN'): {token}")
    if not url:
        print("the page prints its address when it starts (`alignpipe run`, or `alignpipe label serve`)")


@app.command()
def serve(stage: str | None = STAGE, workspace: str | None = WORKSPACE, db: str | None = DB,
          host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (0.0.0.0: every interface)"),
          port: int = typer.Option(0, "--port", help="port (0: the job's previous one if free, else any)")) -> None:
    """Serve a job's labeling page until Ctrl-C (judgments go to the same file the stage reads)."""
    from alignpipe.labeling.server import PageServer, free_or_zero, require_page_packages

    require_page_packages("alignpipe label serve")
    job = _open(stage, workspace, db)
    if job.finished():
        raise UserError(f"{job.path}: labeling is finished ({job.finished()}); nothing left to serve")
    page = PageServer(job, host, port or free_or_zero(host, job.setting("port")))
    job.configure(url=page.url, port=page.sock.getsockname()[1])
    print(f"labeling page {page.url}", flush=True)
    print(f"admin (one-time link): {page.url}login?t={job.one_time_link()}", flush=True)
    page.serve_forever()


@app.command()
def status(stage: str | None = STAGE, workspace: str | None = WORKSPACE, db: str | None = DB,
           as_json: bool = typer.Option(False, "--json")) -> None:
    """Progress, annotators and agreement."""
    from alignpipe.labeling.app import admin_report

    report = admin_report(_open(stage, workspace, db))
    if as_json:
        print(json.dumps(report, indent=1, sort_keys=True))
        return
    p, a = report["progress"], report["agreement"]
    print(f"{p['votes']} of {p['target']} judgments (overlap {p['overlap']}), {p['complete']} of {p['pairs']} pairs "
          f"complete" + (f"; finished ({p['finished']})" if p["finished"] else ""))
    kappa = "-" if a["fleiss_kappa"] is None else f"{a['fleiss_kappa']:.3f}"
    print(f"Fleiss' kappa {kappa} on {a['pairs_with_overlap']} pairs with 2+ votes; outcomes {a['outcomes']}")
    for name, x in report["annotators"].items():
        agree = x["agreement_with_majority"]
        agree_s = f"{agree['rate']:.2f} of {agree['of']}" if agree else "-"
        print(f"  {name}: {x['judgments']} judgments, {x['skips']} skips, agreement with the others {agree_s}")


@app.command()
def finish(stage: str | None = STAGE, workspace: str | None = WORKSPACE, db: str | None = DB) -> None:
    """Finish labeling now (like the admin page's button): judgments freeze and the stage writes its output."""
    print(f"finished: {_open(stage, workspace, db).finish('finished from the command line')}")


@app.command("export")
def export_(out: str = typer.Option(..., "--out", "-o", help="file to write (JSON)"),
            fmt: str = typer.Option(..., "--format", "-f", help=f"{FORMATS} | judgments"),
            include_done: bool = typer.Option(False, "--all", help="every pair, not only those still needing votes"),
            stage: str | None = STAGE, workspace: str | None = WORKSPACE, db: str | None = DB) -> None:
    """Export the pairs still to label in another tool's import format (or every judgment as JSON lines)."""
    from alignpipe.labeling import interop

    job = _open(stage, workspace, db)
    if fmt == "judgments":
        rows = job.judgments()
        Path(out).write_text("".join(json.dumps({k: v for k, v in r.items() if k != "id"}) + "\n" for r in rows))
        print(f"wrote {len(rows)} judgments to {out}")
        return
    if fmt not in interop.WRITERS:
        raise UserError(f"--format {fmt!r}: expected {FORMATS} or judgments")
    items = interop.WRITERS[fmt](job.pairs(pending_only=not include_done), job.setting("seed", 0))
    Path(out).write_text(json.dumps(items, indent=1, ensure_ascii=False))
    print(f"wrote {len(items)} pairs to {out} ({fmt})")
    if fmt == "label-studio":
        config = Path(out).with_suffix(".label_config.xml")
        config.write_text(interop.LABEL_STUDIO_CONFIG)
        print(f"labeling interface for the Label Studio project: {config}")


@app.command("import")
def import_(file: str = typer.Argument(..., help="the tool's export (JSON list or JSON lines)"),
            fmt: str = typer.Option(..., "--format", "-f", help=f"{FORMATS} | judgments"),
            stage: str | None = STAGE, workspace: str | None = WORKSPACE, db: str | None = DB) -> None:
    """Import another tool's annotations as judgments (each annotator keeps their own name; repeats are ignored)."""
    from alignpipe.labeling import interop
    from alignpipe.labeling.db import Conflict

    if fmt not in interop.READERS:
        raise UserError(f"--format {fmt!r}: expected {FORMATS} or judgments")
    job = _open(stage, workspace, db)
    try:
        rows = interop.READERS[fmt](interop.read_file(Path(file)))
        counts = job.import_judgments(rows, source=fmt)
    except OSError as e:
        raise UserError(f"{file}: {e.strerror}") from None
    except (ValueError, Conflict) as e:
        raise UserError(f"{file} ({fmt}): {e}") from None
    print(f"{file}: {counts['added']} judgments added, {counts['duplicate']} already there, "
          f"{counts['unknown_pair']} for pairs not in this job, {counts['refused']} refused (changed answers or "
          "pairs already at their overlap)")
