"""The command line: parse, call alignpipe.api, render. No logic of its own, no torch at start-up."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alignpipe.distributed.cli import add_commands as add_distributed_commands
from alignpipe.export.cli import register as register_export
from alignpipe.integrations.cli import add_commands as add_integration_commands
from alignpipe.labeling.cli import app as label_app
from alignpipe.pipeline.errors import UserError
from alignpipe.report import cli as report_cli

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="alignpipe: RLHF as one managed computation graph.")
stage_app = typer.Typer(help="Run one stage outside a pipeline (manual mode).", pretty_exceptions_enable=False)
app.add_typer(stage_app, name="stage")
app.add_typer(label_app, name="label")  # alignpipe.labeling.cli: the human judge's jobs
out = Console(highlight=False, soft_wrap=True)
app.command()(report_cli.report)
app.command()(report_cli.watch)

WS_HELP = "workspace directory (default: $ALIGNPIPE_WORKSPACE or ./workspace)"


def _version(value: bool) -> None:
    if value:
        from alignpipe import __version__

        print(f"alignpipe {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """alignpipe: RLHF as one managed computation graph."""


def _ws(ws: str | None) -> Path:
    from alignpipe.pipeline.store import workspace_location

    return workspace_location(ws or os.environ.get("ALIGNPIPE_WORKSPACE") or "workspace", Path.cwd())


def _workspace(ws: str | None):
    from alignpipe.api import Workspace

    return Workspace(_ws(ws))


def _dump(obj: Any) -> None:
    print(json.dumps(obj, indent=1, sort_keys=True, default=str))


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


# ---------------------------------------------------------------------------------------------------------------


@app.command()
def run(
    pipeline: str | None = typer.Argument(None, help="pipeline YAML (default: the built-in pipeline); with "
                                          "--example, an example's name: example (default), overoptimization"),
    workspace: str | None = typer.Option(None, "--workspace", "-w", help="overrides the spec's workspace"),
    from_: str | None = typer.Option(None, "--from", help="re-execute STAGE and everything downstream of it"),
    until: str | None = typer.Option(None, "--until", help="run only STAGE and what it depends on"),
    only: str | None = typer.Option(None, "--only", help="run only STAGE (its inputs must be cached)"),
    force: list[str] = typer.Option([], "--force", help="re-execute STAGE even when cached (repeatable)"),
    example: bool = typer.Option(False, "--example", help="run a built-in example (PIPELINE names it): the "
                                 "engine's tiny example, or the overoptimization study"),
    wait: bool = typer.Option(False, "--wait", help="wait for a concurrent run on the workspace to finish"),
    verify: str | None = typer.Option(None, "--verify", help="re-hashing of artifacts: inputs (default: what a "
                                      "running stage reads, and cache hits modified since sealed), always (every "
                                      "cache hit in full) or never (sizes only); overrides the spec's `verify`"),
    new_journal: bool = typer.Option(False, "--new-journal", help="if the journal is damaged, move it aside and "
                                     "start a new one (finished stages stay cached)"),
    journal: str | None = typer.Option(None, "--journal", help="postgresql://USER@HOST:PORT/DB: a journal several "
                                       "machines share (recorded in the workspace; default: embedded SQLite)"),
    cache: str | None = typer.Option(None, "--cache", help="this machine's cache of a bucket workspace's "
                                     "artifacts (default: $ALIGNPIPE_CACHE, else ~/.cache/alignpipe)"),
    executor: str = typer.Option("local", "--executor", help="local (processes here) or ray (a Ray cluster)"),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster address (default: start "
                                              "a local one); a local workspace must be on a path every node "
                                              "sees, a bucket workspace needs no shared disk"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print only failures and the result"),
    as_json: bool = typer.Option(False, "--json", help="JSON lines events on stdout"),
    mlflow: str | None = typer.Option(None, "--mlflow", help="track the run in MLflow at this URI (default: "
                                      "$ALIGNPIPE_MLFLOW, else the spec's tracking.mlflow)"),
) -> None:
    """Run a pipeline: cached stages are skipped, interrupted ones resume from their checkpoints."""
    from alignpipe import api
    from alignpipe.pipeline.executors import make_executor
    from alignpipe.progress import make_reporter

    if cache:  # a machine's setting, not the pipeline's: the stage processes it starts inherit it
        os.environ["ALIGNPIPE_CACHE"] = str(Path(cache).expanduser().absolute())
    engine = make_executor(executor, ray_address)
    try:
        pipe = api.load(None if example else pipeline, builtin=(pipeline or "example") if example else "default",
                        machine=engine.machine())
        reporter = make_reporter(quiet, as_json)
        try:
            result = api.run(pipe, workspace=workspace, from_=from_, until=until, only=only, force=tuple(force),
                             wait=wait, report=reporter, executor=engine, verify=verify, new_journal=new_journal,
                             journal=journal, mlflow=mlflow)
        finally:
            reporter.close()
    finally:
        engine.close()
    report_cli.after_run(result, quiet, as_json)  # before the result, which stays the last JSON line
    _print_result(result, quiet, as_json)
    raise typer.Exit(result.exit_code)


def _print_result(result: Any, quiet: bool, as_json: bool) -> None:
    from alignpipe.pipeline.store import Store

    headlines = []
    if as_json or not quiet:  # -q prints none: no manifest reads
        store = Store(result.workspace)
        for s in result.stages.values():
            for oid in s.outputs.values():
                head = store.get(oid).manifest.get("summary", {}).get("headline")
                if head:
                    headlines.append((s.name, head))
    if as_json:  # one JSON object per line, like the events before it
        print(json.dumps({"event": "result", "run_id": result.run_id, "status": result.status,
                          "headlines": dict(headlines),
                          "stages": {n: {"state": s.state, "attempts": s.attempts, "outputs": s.outputs,
                                         "error": s.error} for n, s in result.stages.items()}}))
        return
    for name, head in headlines:
        out.print(f"\n[bold]{name}[/]")
        # a terminal gets the rendered table; a pipe or log gets the markdown itself (pasteable, never wrapped)
        if out.is_terminal:
            from rich.markdown import Markdown  # ~30 ms of regex compiling: only when a terminal shows a table

            out.print(Markdown(head), markup=False)
        else:
            out.print(head, markup=False)
    counts: dict[str, int] = {}
    for s in result.stages.values():
        counts[s.state] = counts.get(s.state, 0) + 1
    style = {"done": "green", "failed": "red", "interrupted": "red"}[result.status]
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    out.print(f"[{style}]run {result.run_id} {result.status}[/] ({summary}); workspace {result.workspace}")


@app.command()
def validate(pipeline: str = typer.Argument(..., help="pipeline YAML")) -> None:
    """Validate a pipeline spec without running anything."""
    from alignpipe import api

    pipe = api.load(pipeline)
    out.print(f"[green]ok[/] {escape(pipeline)}: {len(pipe.stages)} stages in order {' -> '.join(pipe.order)}")


@app.command()
def artifacts(workspace: str | None = typer.Option(None, "--workspace", "-w", help=WS_HELP),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """List the artifacts in the store."""
    ws = _workspace(workspace)
    arts = ws.artifacts()
    tags: dict[str, list[str]] = {}
    for t, i in ws.store.tags().items():
        tags.setdefault(i, []).append(t)
    if as_json:
        _dump([{"id": a.id, "kind": a.kind, "producer": a.producer, "created": a.manifest.get("created"),
                "size": sum(f["size"] for f in a.manifest["files"]), "tags": tags.get(a.id, []),
                **({"problem": a.manifest["problem"]} if a.kind == "corrupt" else {})} for a in arts])
        return
    t = Table("id", "kind", "stage", "output", "size", "created", "tags", box=None)
    for a in arts:
        size = sum(f["size"] for f in a.manifest["files"])
        kind = "[red]corrupt[/]" if a.kind == "corrupt" else a.kind
        t.add_row(a.id[:12], kind, a.producer.get("stage") or "-", a.producer.get("output") or "-", _size(size),
                  _when(a.manifest.get("created")), ",".join(tags.get(a.id, [])))
    out.print(t)
    for a in arts:
        if a.kind == "corrupt":
            out.print(f"[red]corrupt[/] {a.id[:12]}: {escape(a.manifest['problem'])}", markup=True)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


@app.command()
def show(ref: str = typer.Argument(..., help="artifact id, id prefix, tag, or stage[.output] of the latest run"),
         workspace: str | None = typer.Option(None, "--workspace", "-w", help=WS_HELP),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Show an artifact's manifest and path."""
    a = _workspace(workspace).show(ref)
    if as_json:
        _dump({"path": str(a.path), "manifest": a.manifest})
        return
    m = a.manifest
    out.print(f"[bold]{a.id}[/]  {a.kind}\npath: {a.path}")
    p = m.get("producer", {})
    out.print(f"producer: stage {p.get('stage')} ({p.get('uses')} v{p.get('version')}) output {p.get('output')}, "
              f"run {p.get('run_id')}, fingerprint {str(p.get('fingerprint'))[:12]}")
    if p.get("platform"):  # published by a platform's task (`alignpipe stage exec`)
        out.print(f"platform: {p['platform']} run {p.get('platform_run_id') or '-'}")
    for name, inp in m.get("inputs", {}).items():
        ext = f" (external {inp['external']})" if inp.get("external") else ""
        out.print(f"input {name}: {inp['id'][:12]}{ext}")
    out.print(f"params: {escape(json.dumps(m.get('params', {}), sort_keys=True))}")
    if m.get("summary"):
        summary = {k: v for k, v in m["summary"].items() if k != "headline"}
        out.print(f"summary: {escape(json.dumps(summary, sort_keys=True))}")
    out.print(f"files: {len(m['files'])}, {_size(sum(f['size'] for f in m['files']))}; created {_when(m['created'])}")


@app.command()
def lineage(ref: str = typer.Argument(..., help="artifact id, prefix, tag or stage[.output]"),
            workspace: str | None = typer.Option(None, "--workspace", "-w", help=WS_HELP),
            as_json: bool = typer.Option(False, "--json")) -> None:
    """Show the upstream graph of an artifact down to its external inputs."""
    tree = _workspace(workspace).lineage(ref)
    if as_json:
        _dump(tree)
        return

    def walk(node: dict[str, Any], label: str, depth: int) -> None:
        pad = "  " * depth
        if node.get("external"):
            out.print(f"{pad}{label}[dim]external[/] {escape(node['external'])} ({node['id'][:12]})")
        elif node.get("missing"):
            out.print(f"{pad}{label}[red]missing[/] {node['id'][:12]}")
        else:
            out.print(f"{pad}{label}[bold]{node['id'][:12]}[/] {node['kind']} from {node['stage']}.{node['output']} "
                      f"({node['uses']})")
            for name, child in node["inputs"].items():
                walk(child, f"{name} <- ", depth + 1)

    walk(tree, "", 0)


@app.command()
def tag(name: str, ref: str, workspace: str | None = typer.Option(None, "--workspace", "-w", help=WS_HELP)) -> None:
    """Give an artifact a name (a named version)."""
    art_id = _workspace(workspace).tag(name, ref)
    out.print(f"tagged {art_id[:12]} as {name}")


@app.command()
def verify(ref: str | None = typer.Argument(None, help="one artifact (default: all)"),
           workspace: str | None = typer.Option(None, "--workspace", "-w", help=WS_HELP)) -> None:
    """Re-hash artifacts and report corruption (exit 1 if any)."""
    report = _workspace(workspace).verify(ref)
    bad = {i: p for i, p in report.items() if p}
    for i, problems in report.items():
        if problems:
            out.print(f"[red]corrupt[/] {i[:12]}: " + escape("; ".join(problems)))
    out.print(f"{len(report) - len(bad)} ok, {len(bad)} corrupt")
    raise typer.Exit(1 if bad else 0)


@app.command()
def push(ref: str = typer.Argument(..., help="an artifact: id, id prefix, tag, or stage[.output]"),
         to: str | None = typer.Option(None, "--to", help="another workspace (a directory or a bucket URI): copy "
                                       "the artifact and its whole lineage there"),
         dvc: str | None = typer.Option(None, "--dvc", help="or: the root of a DVC repository (a clean git tree)"),
         path: str | None = typer.Option(None, "--path", help="with --dvc: directory in the repo (default: "
                                         "alignpipe/STAGE.OUTPUT)"),
         remote: str | None = typer.Option(None, "--remote", help="with --dvc: the DVC remote (default: the repo's)"),
         dry_run: bool = typer.Option(False, "--dry-run", help="with --to: list what would move"),
         workspace: str | None = typer.Option(None, "--workspace", "-w", help=WS_HELP)) -> None:
    """Copy an artifact with its lineage to another workspace (--to), or version it in a DVC repository (--dvc)."""
    if (to is None) == (dvc is None):
        raise UserError("push: give one destination: --to WORKSPACE (a directory or bucket URI) or --dvc REPO")
    if dvc is not None:
        from alignpipe.integrations.cli import push_dvc_command

        push_dvc_command(ref, dvc, path, remote, workspace)
        return
    ws = _workspace(workspace)
    _transfer(ws.store, _store(to), ws.resolve(ref), dry_run, "to")


@app.command()
def pull(ref: str = typer.Argument(..., help="an artifact of the other workspace: id, id prefix, tag or "
                                    "stage.output (the newest it made)"),
         source: str = typer.Option(..., "--from", help="the workspace to copy from (a directory or a bucket URI)"),
         dry_run: bool = typer.Option(False, "--dry-run", help="list what would move"),
         workspace: str | None = typer.Option(None, "--workspace", "-w", help=WS_HELP)) -> None:
    """Copy an artifact with its whole lineage from another workspace into this one."""
    src = _store(source)
    dst = _store(str(_ws(workspace)))
    _transfer(src, dst, src.resolve_id(ref), dry_run, "from")


def _store(ws: str) -> Any:
    from alignpipe.pipeline.store import Store, check_workspace

    store = Store(_ws(ws))
    check_workspace(store)
    return store.ensure()


def _transfer(src: Any, dst: Any, art_id: str, dry_run: bool, direction: str) -> None:
    from alignpipe.pipeline.transfer import transfer

    if dry_run or not out.is_terminal:
        res = transfer(src, dst, art_id, dry_run=dry_run)
    else:  # a progress bar over the bytes of the closure
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        total = sum(e["size"] for i in src.closure({art_id}) if not dst.has(i) for e in src.get(i).manifest["files"])
        with Progress("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=out, transient=True) as bar:
            task = bar.add_task("copying", total=total)
            res = transfer(src, dst, art_id, progress=lambda _, n: bar.advance(task, n))
    verb = "would copy" if dry_run else "copied"
    for i in res.moved:
        a = src.get(i)
        out.print(f"{verb} {i[:12]} {a.kind} {a.producer.get('stage')}.{a.producer.get('output')}")
    where = dst.root if direction == "to" else src.root
    out.print(f"{verb} {len(res.moved)} artifacts ({_size(res.bytes)}) {direction} {where}; {len(res.present)} "
              f"already there" + ("" if dry_run else f"; {len(res.refs)} cache refs recorded"))


@app.command()
def gc(dry_run: bool = typer.Option(False, "--dry-run", help="list what would be removed"),
       workspace: str | None = typer.Option(None, "--workspace", "-w", help=WS_HELP)) -> None:
    """Remove artifacts no latest run or tag references (keeping their lineage), and stale work dirs."""
    res = _workspace(workspace).gc(dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for a in res["artifacts"]:
        out.print(f"{verb} artifact {a[:12]}")
    counts = (f"{len(res[k])} {what}" for k, what in (("artifacts", "artifacts"), ("refs", "cache refs"),
                                                         ("work", "work dirs"), ("quarantine", "quarantined")))
    out.print(f"{verb} " + ", ".join(counts))


@app.command()
def status(run_ref: str | None = typer.Argument(None, metavar="RUN", help="run id or prefix (default: latest)"),
           workspace: str | None = typer.Option(None, "--workspace", "-w", help=WS_HELP),
           as_json: bool = typer.Option(False, "--json")) -> None:
    """A table of a run's stages: state, duration, attempts, cached, artifact."""
    ws = _workspace(workspace)
    run_id, attempts = ws.status(run_ref)
    stages: dict[str, dict[str, Any]] = {}
    for a in attempts:
        s = stages.setdefault(a.stage, {"attempts": 0, "first": a.started})
        s.update(state=a.status, cached=a.cache_hit, outputs=a.outputs, error=a.error, exit_code=a.exit_code,
                 ended=a.ended)
        s["attempts"] += 0 if a.cache_hit else 1
    for s in stages.values():
        s["duration"] = (s["ended"] - s["first"]) if s.get("ended") and s.get("first") else None
    if as_json:
        _dump({"run_id": run_id, "stages": stages})
        return
    t = Table("stage", "state", "duration", "attempts", "cached", "artifact", title=f"run {run_id}", box=None)
    for name, s in stages.items():
        dur = f"{s['duration']:.1f}s" if s["duration"] is not None else "-"
        arts = ",".join(v[:12] for v in s["outputs"].values()) or "-"
        t.add_row(name, s["state"], dur, str(s["attempts"]), "yes" if s["cached"] else "no", arts)
    out.print(t)
    for name, s in stages.items():
        if s["state"] in ("failed", "rejected") and s.get("error"):
            out.print(f"[red]{name}[/]: {escape(s['error'])}")


@app.command()
def runs(workspace: str | None = typer.Option(None, "--workspace", "-w", help=WS_HELP),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """List runs, newest first."""
    rows = _workspace(workspace).runs()
    if as_json:
        _dump(rows)
        return
    t = Table("run", "pipeline", "status", "started", "duration", "platform", box=None)
    for r in rows:
        dur = f"{r['ended'] - r['started']:.1f}s" if r["ended"] else "-"
        plat = f"{r['platform']} {r['platform_run_id'] or ''}".strip() if r.get("platform") else "-"
        t.add_row(r["id"], r["pipeline"], r["status"], _when(r["started"]), dur, plat)
    out.print(t)


@app.command()
def metrics(stage: str, workspace: str | None = typer.Option(None, "--workspace", "-w", help=WS_HELP),
            as_json: bool = typer.Option(False, "--json", help="every point, as JSON"),
            plot: str | None = typer.Option(None, "--plot", help="write a PNG with one panel per metric"),
            names: list[str] = typer.Option([], "--metric", "-m", help="only this metric (repeatable)")) -> None:
    """The metric series a stage logged (losses, KL, scores...): first, last, min, max per metric."""
    series = _workspace(workspace).metrics(stage)
    if names:
        unknown = sorted(set(names) - set(series))
        if unknown:
            raise UserError(f"stage {stage!r} logged no metric {unknown}; it logged: {', '.join(series)}")
        series = {n: series[n] for n in names}
    if not series:
        raise UserError(f"stage {stage!r} logged no metrics")
    if as_json:
        _dump(series)
    else:
        t = Table("metric", "points", "first", "last", "min", "max", box=None)
        for name, pts in series.items():
            vals = [v for _, v in pts]
            t.add_row(name, str(len(pts)), *(f"{x:.4g}" for x in (vals[0], vals[-1], min(vals), max(vals))))
        out.print(t)
    if plot:
        _plot(stage, series, plot)
        out.print(f"wrote {plot}")


def _plot(stage: str, series: dict[str, list[tuple[int, float]]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(series))
    rows = -(-len(series) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    for ax, (name, pts) in zip(axes.flat, series.items(), strict=False):
        ax.plot([s for s, _ in pts], [v for _, v in pts], lw=1.2)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    fig.suptitle(f"{stage}: metrics by step", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    fig.savefig(path, dpi=110)


@app.command()
def logs(stage: str, workspace: str | None = typer.Option(None, "--workspace", "-w", help=WS_HELP),
         follow: bool = typer.Option(False, "--follow", "-f", help="keep printing what the stage writes until its "
                                     "attempt ends (from any machine: a bucket workspace mirrors logs as they grow)"),
         interval: float = typer.Option(1.0, "--interval", min=0.1, help="with -f: seconds between polls")) -> None:
    """Print the log of a stage's latest attempt."""
    ws = _workspace(workspace)
    if not follow:
        sys.stdout.write(ws.log(stage))
        return
    for chunk in ws.follow_log(stage, interval):
        sys.stdout.write(chunk)
        sys.stdout.flush()


# ---------------------------------------------------------------------------------------------------------------


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    outp = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep or not k:
            raise UserError(f"{flag} {it!r}: expected NAME=VALUE")
        outp[k] = v
    return outp


@stage_app.command("run")
def stage_run(
    uses: str | None = typer.Argument(None, metavar="TYPE", help="stage type or package.module:function"),
    inputs: list[str] = typer.Option([], "--input", "-i", help="NAME=PATH (repeatable)"),
    params: list[str] = typer.Option([], "--param", "-p", help="KEY=VALUE, value parsed as YAML (repeatable)"),
    out_dir: str | None = typer.Option(None, "--out", "-o", help="directory for the output artifact(s)"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**63 - 1, help="the stage's seed, 0 .. 2**63-1"),
    task: str | None = typer.Option(None, "--task", help="a task description JSON (what executors pass)"),
) -> None:
    """Run one stage on explicit paths, or from a task description file."""
    from alignpipe.pipeline.entry import run_task_file

    if task:
        raise typer.Exit(run_task_file(task))
    if not uses or not out_dir:
        raise UserError("stage run: give TYPE and --out DIR (or --task FILE)")
    from alignpipe import api

    parsed = {k: yaml.safe_load(v) for k, v in _pairs(params, "--param").items()}
    outputs = api.run_stage(uses, inputs=_pairs(inputs, "--input"), params=parsed, out=out_dir, seed=seed)
    for name, art_id in outputs.items():
        out.print(f"{name}: {art_id[:12]} -> {out_dir if len(outputs) == 1 else Path(out_dir) / name}")


add_integration_commands(app)  # publish, register, push, pull: alignpipe.integrations.cli
add_distributed_commands(app)  # plan: alignpipe.distributed.cli
register_export(app, stage_app)  # `alignpipe export` and `alignpipe stage exec` (alignpipe.export.cli)


def main() -> None:
    from alignpipe.pipeline.errors import StageFailed

    try:
        code = app(standalone_mode=False)  # typer returns Exit codes here instead of raising
        sys.exit(code if isinstance(code, int) else 0)
    except (UserError, StageFailed) as e:
        from alignpipe.progress import err

        err(str(e))
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        sys.exit(130)
    except typer.TyperException as e:  # usage errors (typer vendors click since 0.29: no `click` import here)
        show = getattr(e, "show", None)
        if show is not None:
            show()
        else:
            from alignpipe.progress import err

            err(e.format_message())
        sys.exit(e.exit_code)
