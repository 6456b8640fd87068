"""`alignpipe watch`: a live terminal view of a run, from the workspace alone (usable over ssh, from any shell).

Each refresh reads the journal (the run, its plan, attempts and the running stages' latest metrics) and the tail of
each running attempt's events file (the stage's own progress ticks, the same file the runner tails). ETA: the
running stage's remaining ticks at its recent rate, plus each pending stage's duration in its last successful
execution — or, for a matrix branch that never ran, its finished siblings' mean (sequential, and as if nothing
were cached); shown as a lower bound while some stage's duration is unknown. Exits when the run ends, with the
run's exit code (0 done, 1 failed or abandoned, 130 interrupted).
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.journal import Attempt, Journal
from alignpipe.pipeline.matrix import split_name
from alignpipe.pipeline.runner import attempt_path
from alignpipe.pipeline.store import Store
from alignpipe.progress import MARKS
from alignpipe.report import metric_rank

EXIT = {"done": 0, "failed": 1, "interrupted": 130, "abandoned": 1}
METRICS_SHOWN = 6


@dataclass
class Progress:
    """The first and latest progress tick of one attempt, read incrementally from its events file."""

    offset: int = 0
    first: tuple[float, float] | None = None  # (t, done)
    last: tuple[float, float] | None = None
    total: float = 0.0
    desc: str = ""

    def read(self, path: Path) -> None:
        try:
            with open(path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1  # whole lines only: the stage may be mid-write
        self.offset += end
        for line in chunk[:end].splitlines():
            ev = json.loads(line)
            if ev.get("type") == "progress":
                tick = (ev["t"], float(ev["done"]))
                self.first = self.first or tick
                self.last, self.total, self.desc = tick, float(ev["total"]), ev.get("desc", "")

    def eta(self) -> float | None:
        if not self.first or not self.last or self.last[1] <= self.first[1]:
            return None
        rate = (self.last[1] - self.first[1]) / max(self.last[0] - self.first[0], 1e-6)
        return max(0.0, (self.total - self.last[1]) / rate)


@dataclass
class StageView:
    name: str
    state: str = "pending"
    attempt: int = 0
    started: float | None = None
    ended: float | None = None
    progress: Progress | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    metrics_step: int | None = None
    expected: float | None = None  # seconds its last successful execution took


@dataclass
class Snapshot:
    run: dict
    stages: dict[str, StageView]

    @property
    def status(self) -> str:
        return self.run["status"]

    def eta(self) -> tuple[float | None, bool]:
        """(seconds left, complete): complete is False when some stage's duration is unknown (the ETA is then a
        lower bound: a stage never run before, or a running one without progress ticks yet)."""
        parts = []
        for s in self.stages.values():
            if s.state == "running":
                parts.append(s.progress.eta() if s.progress else None)
            elif s.state in ("pending", "ready"):
                parts.append(s.expected)
        known = [p for p in parts if p is not None]
        return (sum(known) if known else None), len(known) == len(parts)


# ---------------------------------------------------------------------------------------------------------------


class Watcher:
    """Reads a run's state from a workspace; keeps per-attempt event offsets between refreshes."""

    def __init__(self, journal: Journal, store: Store, run_id: str):
        self.journal, self.store, self.run_id = journal, store, run_id
        self.progress: dict[tuple[str, int], Progress] = {}
        self.expected: dict[str, float | None] = {}

    def _expected(self, stage: str) -> float | None:
        if stage not in self.expected:
            last = self.journal.last_attempt(stage, executed=True)
            ok = last is not None and last.status == "done" and last.started and last.ended
            self.expected[stage] = (last.ended - last.started) if ok else None
        return self.expected[stage]

    def _running(self, view: StageView, a: Attempt) -> None:
        key = (a.stage, a.attempt)
        prog = self.progress.setdefault(key, Progress())
        prog.read(attempt_path(self.store, str(a.fingerprint), self.run_id, a.attempt) / "events.jsonl")
        view.progress = prog
        series = self.journal.metrics(str(a.fingerprint))
        latest = {n: pts[-1] for n, pts in series.items() if pts}
        if latest:
            view.metrics_step = max(step for step, _ in latest.values())
            view.metrics = {n: v for n, (step, v) in latest.items() if step == view.metrics_step}

    def snapshot(self) -> Snapshot:
        run = self.journal.run_info(self.run_id) or {"id": self.run_id, "status": "abandoned"}
        if run["status"] == "running" and not _alive(run):
            run = {**run, "status": "abandoned"}
        plan = self.journal.plan(self.run_id) or []
        views = {n: StageView(n, expected=self._expected(n)) for n in plan}
        for a in self.journal.attempts(self.run_id):
            v = views.setdefault(a.stage, StageView(a.stage))
            v.state, v.attempt, v.started, v.ended = a.status, a.attempt, a.started, a.ended
            if a.status == "running":
                self._running(v, a)
        _expect_from_siblings(views)
        return Snapshot(run, views)


def _expect_from_siblings(views: dict[str, StageView]) -> None:
    """A matrix branch that never ran here is expected to take as long as its finished siblings did on average."""
    done: dict[str, list[float]] = {}
    for v in views.values():
        if v.state == "done" and v.started is not None and v.ended is not None:
            done.setdefault(split_name(v.name)[0], []).append(v.ended - v.started)
    for v in views.values():
        siblings = done.get(split_name(v.name)[0])
        if v.expected is None and v.state in ("pending", "ready") and siblings:
            v.expected = sum(siblings) / len(siblings)


def _alive(run: dict) -> bool:
    """False when the run's runner is gone (killed, crashed) on this host; unknown hosts count as alive."""
    if run.get("host") != socket.gethostname() or not run.get("pid"):
        return True
    try:
        os.kill(run["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------------------------
# rendering


def duration(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _stage_row(v: StageView, now: float) -> list:
    mark, style = MARKS.get(v.state, ("?", ""))
    elapsed = ((v.ended or now) - v.started) if v.started else None
    bar, info = Text(""), Text("")
    if v.state == "running" and v.progress and v.progress.total:
        p = v.progress
        bar = ProgressBar(total=p.total, completed=p.last[1], width=24)
        eta = p.eta()
        info = Text(f"{p.last[1]:g}/{p.total:g} {p.desc}" + (f"  ETA {duration(eta)}" if eta is not None else ""))
    elif v.state == "running" and v.attempt > 1:
        info = Text(f"attempt {v.attempt}")
    elif v.state == "cached":
        info = Text("cache hit", style="dim")
    return [Text(mark, style=style), Text(v.name, style="bold"), Text(v.state, style=style), bar,
            Text(f"{elapsed:6.1f}s" if elapsed is not None else "", style="dim"), info]


def _metrics_line(v: StageView) -> Text:
    shown = sorted(v.metrics.items(), key=lambda kv: metric_rank(kv[0]))[:METRICS_SHOWN]
    body = " · ".join(f"{n} {val:.4g}" for n, val in shown)
    return Text(f"{v.name} step {v.metrics_step}: {body}", style="dim")


def render(snap: Snapshot, now: float | None = None) -> Group:
    now = now or time.time()
    r = snap.run
    head = f"run {r['id']} · {r.get('pipeline', '?')} · {snap.status}"
    if r.get("started") is not None:
        head += f" {duration((r.get('ended') or now) - r['started'])}"
    eta, complete = snap.eta()
    if snap.status == "running" and eta is not None:
        head += f" · ETA ~{duration(eta)}" if complete else f" · ETA ≥ {duration(eta)} (some stages never ran here)"
    table = Table.grid(padding=(0, 1))
    for v in snap.stages.values():
        table.add_row(*_stage_row(v, now))
    lines = [_metrics_line(v) for v in snap.stages.values() if v.state == "running" and v.metrics]
    return Group(Text(head, style="bold"), table, *lines)


# ---------------------------------------------------------------------------------------------------------------


def _resolve(journal: Journal, run_ref: str | None, console: Console, poll: float) -> str:
    """The run to watch; with no RUN and no run recorded yet, wait for one to start."""
    if run_ref is not None:
        return journal.resolve_run(run_ref)
    said = False
    while (run := journal.latest_run()) is None:
        if not said:
            console.print(f"waiting for a run to start in {journal.dir.parent}")
            said = True
        time.sleep(poll)
    return run


def _open(workspace: Path, console: Console, poll: float) -> Journal:
    said = False
    while True:
        try:
            return Journal(workspace, readonly=True)
        except UserError:
            if not said:
                console.print(f"waiting for a run to start in {workspace}")
                said = True
            time.sleep(poll)


def watch(workspace: str | os.PathLike, run_ref: str | None = None, interval: float = 0.5,
          console: Console | None = None) -> int:
    """Show run `run_ref` (default: the latest) live until it ends; returns the run's exit code."""
    console = console or Console()
    ws = Path(workspace)
    if run_ref is not None and not (ws / ".alignpipe" / "journal.db").exists():
        raise UserError(f"{ws}: no alignpipe workspace here (no .alignpipe/journal.db); pass --workspace")
    journal = _open(ws, console, interval)
    try:
        watcher = Watcher(journal, Store(ws), _resolve(journal, run_ref, console, interval))
        snap = watcher.snapshot()
        if not console.is_terminal:
            return _watch_lines(watcher, snap, console, interval)
        with Live(render(snap), console=console, auto_refresh=False, transient=False) as live:
            while snap.status == "running":
                time.sleep(interval)
                snap = watcher.snapshot()
                live.update(render(snap), refresh=True)
        return EXIT.get(snap.status, 1)
    finally:
        journal.close()


def _watch_lines(watcher: Watcher, snap: Snapshot, console: Console, interval: float) -> int:
    """Not a terminal (a pipe, a log): one line per stage state change, then the final view."""
    seen: dict[str, str] = {}
    while True:
        for v in snap.stages.values():
            if seen.get(v.name) != v.state:
                seen[v.name] = v.state
                console.print(f"{MARKS.get(v.state, ('?', ''))[0]} {v.name} {v.state}", highlight=False)
        if snap.status != "running":
            console.print(render(snap))
            return EXIT.get(snap.status, 1)
        time.sleep(interval)
        snap = watcher.snapshot()
