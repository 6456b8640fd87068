"""Rendering run events: a live rich table (one line per stage), quiet lines, or JSON lines for machines."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

MARKS = {"pending": ("·", "dim"), "ready": ("·", "dim"), "running": ("▶", "cyan"), "done": ("✔", "green"),
         "cached": ("≡", "blue"), "failed": ("✘", "red"), "rejected": ("✘", "red"),
         "skipped": ("-", "yellow"), "interrupted": ("!", "red")}


class JsonReporter:
    def __call__(self, event: dict[str, Any]) -> None:
        print(json.dumps({"t": round(time.time(), 3), **event}), flush=True)

    def close(self) -> None:
        pass


class QuietReporter:
    """Only failures, to stderr."""

    def __init__(self) -> None:
        self.err = Console(stderr=True, soft_wrap=True)

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("event") == "stage" and event.get("state") in ("failed", "rejected"):
            self.err.print(f"[red]✘ {event['stage']}[/] {escape(event.get('error') or '')}", markup=True,
                           highlight=False)
        elif event.get("event") == "warning":
            warn(self.err, event)
        elif event.get("event") == "notice":  # something to act on (a labeling page waiting for people)
            self.err.print(f"{event['stage']}: {event['message']}", markup=False, highlight=False)

    def close(self) -> None:
        pass


class LiveReporter:
    """One line per stage: mark, name, state, progress bar, elapsed; a line per finished stage on non-TTYs."""

    def __init__(self) -> None:
        self.console = Console(stderr=False, soft_wrap=True)
        self.rows: dict[str, dict[str, Any]] = {}
        self.live: Live | None = None
        self.interactive = self.console.is_terminal

    def _table(self) -> Group:
        t = Table.grid(padding=(0, 1))
        for name, r in self.rows.items():
            mark, style = MARKS.get(r["state"], ("?", ""))
            elapsed = (r.get("end") or time.time()) - r["start"] if r.get("start") else None
            bar: Any = ""
            if r["state"] == "running" and r.get("total"):
                bar = ProgressBar(total=r["total"], completed=r["done"], width=24)
            info = r.get("desc", "")
            if r["state"] == "cached":
                info = "cache hit"
            t.add_row(Text(mark, style=style), Text(name, style="bold"), Text(r["state"], style=style), bar,
                      Text(f"{elapsed:6.1f}s" if elapsed is not None else "", style="dim"), Text(info, style="dim"))
        return Group(t)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "plan":
            self.rows = {s: {"state": "pending"} for s in event["stages"]}
            self.console.print(f"run [bold]{event['run_id']}[/] in {event['workspace']}", highlight=False)
            if self.interactive:
                self.live = Live(self._table(), console=self.console, refresh_per_second=8, transient=False)
                self.live.start()
        elif kind == "stage":
            r = self.rows.setdefault(event["stage"], {})
            r["state"] = event["state"]
            if event["state"] == "running":
                r["start"], r["end"] = time.time(), None
                if event.get("attempt", 1) > 1:
                    r["desc"] = f"attempt {event['attempt']}"
            elif event["state"] in ("done", "failed", "rejected", "cached", "skipped", "interrupted", "ready"):
                r["end"] = time.time()
            if not self.interactive and event["state"] != "running":
                mark, style = MARKS.get(event["state"], ("?", ""))
                dur = f" {event['duration']:.1f}s" if "duration" in event else ""
                self.console.print(f"[{style}]{mark}[/] {event['stage']} {event['state']}{dur}", highlight=False)
            if event["state"] in ("failed", "rejected", "ready") and event.get("error"):
                msg = "retrying: " if event["state"] == "ready" else ""
                self.console.print(f"[red]{event['stage']}: {msg}{escape(event['error'])}[/]", highlight=False,
                                   markup=True)
        elif kind == "warning":
            warn(self.console, event)
        elif kind == "progress":
            r = self.rows.setdefault(event["stage"], {"state": "running"})
            r.update(done=event["done"], total=event["total"], desc=event.get("desc", ""))
        elif kind == "notice":  # printed above the live table, which keeps redrawing below it
            self.console.print(Text.assemble((event["stage"], "bold"), ": ", event["message"]), highlight=False)
        if self.live:
            self.live.update(self._table())

    def close(self) -> None:
        if self.live:
            self.live.update(self._table())
            self.live.stop()


def make_reporter(quiet: bool, as_json: bool) -> Any:
    if as_json:
        return JsonReporter()
    if quiet:
        return QuietReporter()
    return LiveReporter()


def warn(console: Console, event: dict[str, Any]) -> None:
    where = f"{event['stage']}: " if event.get("stage") else ""
    console.print(f"[yellow]warning:[/] {escape(where + event['message'])}", highlight=False, markup=True)


def err(msg: str) -> None:
    Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {escape(msg)}", highlight=False)
    sys.stderr.flush()
