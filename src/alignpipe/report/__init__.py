"""See a run: the HTML report (`alignpipe report`), the live terminal view (`alignpipe watch`).

The report reads the journal and artifact manifests and never trains or loads a model; it imports neither torch
nor matplotlib, so writing it at the end of `alignpipe run` costs a no-op rerun little.

    from alignpipe.report import write_report
    write_report("workspace", out="report.html")                  # the latest run
    write_report("workspace", run="20261121", compare="20261122")  # two runs side by side
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from alignpipe.pipeline.errors import UserError

if TYPE_CHECKING:  # collect (and the journal behind it) load only when a report is made
    from alignpipe.report.collect import RunData

DEFAULT_NAME = "report.html"
# metrics shown first (report curves, watch's latest values), in this order; the rest alphabetically
METRIC_ORDER = ("score", "gold", "kl", "beta", "loss", "accuracy", "clipfrac", "entropy", "value_loss",
                "response_length", "explained_variance")


def metric_rank(name: str) -> tuple[int, str]:
    base = name.removeprefix("eval_")
    return (METRIC_ORDER.index(base) if base in METRIC_ORDER else len(METRIC_ORDER), name)
_DIGEST_RE = re.compile(rb'<meta name="alignpipe-outputs" content="([0-9a-f]{64})">')


def outputs_digest(outputs: dict[str, dict[str, str]]) -> str:
    """sha256 of a run's stage -> {output: artifact id} (stages without outputs left out): equal for two runs that
    ended with the same artifacts. A report carries it in a <meta> tag."""
    kept = {stage: outs for stage, outs in outputs.items() if outs}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def report_digest(path: str | os.PathLike) -> str | None:
    """The outputs digest an existing report was made for (None if there is no readable report)."""
    try:
        with open(path, "rb") as f:
            m = _DIGEST_RE.search(f.read(4096))
    except OSError:
        return None
    return m.group(1).decode() if m else None


def _run_data(workspace: str | os.PathLike, ref: str | None) -> RunData:
    """A run by id or prefix in `workspace`, or the latest run of another workspace given as a directory."""
    from alignpipe.report.collect import collect

    if ref is not None and (Path(ref) / ".alignpipe" / "journal.db").is_file():
        return collect(ref, None)
    return collect(workspace, ref)


def render_html(workspace: str | os.PathLike, run: str | None = None, compare: str | None = None) -> str:
    from alignpipe.report.html import render, render_compare

    data = _run_data(workspace, run)
    return render(data) if compare is None else render_compare(data, _run_data(workspace, compare))


def write_report(workspace: str | os.PathLike, run: str | None = None, out: str | os.PathLike | None = None,
                 compare: str | None = None) -> Path:
    """Write the report of `run` (default: the latest) — or of `run` vs `compare` — to `out` (default
    WORKSPACE/report.html), atomically; returns its path."""
    text = render_html(workspace, run, compare)
    path = Path(out) if out is not None else Path(workspace) / DEFAULT_NAME
    if path.is_dir():
        raise UserError(f"{path}: is a directory; give the report's file name, e.g. {path / DEFAULT_NAME}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except FileNotFoundError:
        tmp.unlink(missing_ok=True)
        raise UserError(f"{path}: its directory does not exist; create it or choose another -o path") from None
    return path
