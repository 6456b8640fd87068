"""Inline SVG for the HTML report: pure functions from numbers to SVG text.

No script, no web font, no external reference: a report renders the same offline, in print and in any browser.
Every piece of text that reaches the SVG goes through `esc` (stage names, metric names and labels come from
user specs and must not inject markup).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

PALETTE = ("#1f6fb4", "#d6532b", "#2a9d4b", "#8a4fbf", "#c49a00", "#0f9aa8", "#d43d8c", "#6b6b6b")
FONT = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif"
MARGIN = {"left": 48, "right": 10, "top": 24, "bottom": 30}


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def fmt_num(v: float) -> str:
    """A short label for a tick or a value: 3 significant digits, no trailing zeros, k/M for big numbers."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else str(v)
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 1e-3:
        return f"{v:.3g}"
    return f"{v:.1e}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values (1, 2, 2.5 or 5 × 10^k steps) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi == lo:
        return [lo]
    raw = (hi - lo) / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw - 1e-12 * mag)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    k = 0
    while first + k * step <= hi + 1e-9 * step:
        ticks.append(round(first + k * step, 12))
        k += 1
    return ticks


def downsample(points: Sequence[tuple[float, float]], max_points: int) -> list[tuple[float, float]]:
    """At most ~max_points points keeping each bucket's minimum and maximum (spikes survive) and the last point."""
    pts = list(points)
    if len(pts) <= max_points:
        return pts
    size = math.ceil(len(pts) / (max_points // 2))
    out: list[tuple[float, float]] = []
    for i in range(0, len(pts), size):
        bucket = pts[i:i + size]
        lo, hi = min(bucket, key=lambda p: p[1]), max(bucket, key=lambda p: p[1])
        out.extend(sorted({lo, hi}, key=lambda p: p[0]))
    if out[-1] != pts[-1]:
        out.append(pts[-1])
    return out


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    color: str | None = None
    dashed: bool = False
    markers: bool = False
    line: bool = True
    errors: list[float] | None = None  # half-widths of vertical error bars, one per point


@dataclass
class _Frame:
    """Data-to-pixel mapping of one chart's plot area."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: int
    height: int
    log_x: bool = False
    left: int = MARGIN["left"]
    top: int = MARGIN["top"]

    def _xv(self, x: float) -> float:
        return math.log10(x) if self.log_x else x

    def px(self, x: float) -> float:
        span = (self._xv(self.x1) - self._xv(self.x0)) or 1.0
        inner = self.width - self.left - MARGIN["right"]
        return self.left + (self._xv(x) - self._xv(self.x0)) / span * inner

    def py(self, y: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        inner = self.height - self.top - MARGIN["bottom"]
        return self.top + inner - (y - self.y0) / span * inner


@dataclass
class Chart:
    title: str
    series: list[Series]
    x_label: str = ""
    y_label: str = ""
    width: int = 320
    height: int = 200
    log_x: bool = False
    hlines: list[tuple[float, str]] = field(default_factory=list)  # (y, label): targets, chance levels
    note: str = ""


def _finite(points: Sequence[tuple[float, float]], log_x: bool) -> list[tuple[float, float]]:
    return [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y) and (x > 0 or not log_x)]


def _frame(c: Chart, series: list[list[tuple[float, float]]]) -> _Frame | None:
    xs = [x for pts in series for x, _ in pts]
    ys = [y for pts in series for _, y in pts] + [y for y, _ in c.hlines]
    for s, pts in zip(c.series, series, strict=True):
        for (_, y), e in zip(pts, s.errors or [], strict=False):
            ys += [y - e, y + e]
    if not xs:
        return None
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.05 or abs(y0) * 0.05 or 1.0
    return _Frame(min(xs), max(xs), y0 - pad, y1 + pad, c.width, c.height, c.log_x)


def _axes(c: Chart, f: _Frame) -> list[str]:
    out = []
    bottom, right = f.height - MARGIN["bottom"], f.width - MARGIN["right"]
    for t in nice_ticks(f.y0, f.y1, 5):
        y = f.py(t)
        out.append(f'<line x1="{f.left}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e4e4"/>'
                   f'<text x="{f.left - 4}" y="{y + 3:.1f}" text-anchor="end">{esc(fmt_num(t))}</text>')
    if f.log_x:
        lo, hi = math.floor(math.log10(f.x0)), math.ceil(math.log10(f.x1))
        xticks = [10.0 ** k * m for k in range(lo, hi + 1) for m in (1, 2, 5) if f.x0 <= 10.0 ** k * m <= f.x1]
    else:
        xticks = nice_ticks(f.x0, f.x1, 5)
    for t in xticks:
        x = f.px(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 3}" stroke="#888"/>'
                   f'<text x="{x:.1f}" y="{bottom + 13}" text-anchor="middle">{esc(fmt_num(t))}</text>')
    out.append(f'<rect x="{f.left}" y="{f.top}" width="{right - f.left}" height="{bottom - f.top}" fill="none" '
               'stroke="#999"/>')
    if c.x_label:
        out.append(f'<text x="{(f.left + right) / 2:.0f}" y="{f.height - 3}" text-anchor="middle" '
                   f'fill="#555">{esc(c.x_label)}</text>')
    if c.y_label:
        out.append(f'<text transform="translate(11 {(f.top + bottom) / 2:.0f}) rotate(-90)" text-anchor="middle" '
                   f'fill="#555">{esc(c.y_label)}</text>')
    return out


def _series_svg(s: Series, pts: list[tuple[float, float]], f: _Frame, color: str) -> list[str]:
    out = []
    xy = [(f.px(x), f.py(y)) for x, y in pts]
    if s.line and len(xy) > 1:
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"{dash}>'
                   f"<title>{esc(s.label)}</title></polyline>")
    for i, (x, y) in enumerate(xy):
        if s.errors:
            e = s.errors[i]
            top, low = f.py(pts[i][1] + e), f.py(pts[i][1] - e)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" y2="{low:.1f}" stroke="{color}"/>')
        if s.markers or len(xy) == 1:
            tip = f"{s.label}: ({fmt_num(pts[i][0])}, {fmt_num(pts[i][1])})"
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"><title>{esc(tip)}</title></circle>')
    return out


def _legend(c: Chart, f: _Frame) -> list[str]:
    if len(c.series) < 2:
        return []
    out, x = [], f.left + 4
    for i, s in enumerate(c.series):
        color = s.color or PALETTE[i % len(PALETTE)]
        out.append(f'<rect x="{x}" y="{f.top + 4}" width="8" height="8" fill="{color}"/>'
                   f'<text x="{x + 11}" y="{f.top + 12}">{esc(s.label)}</text>')
        x += 18 + 6 * len(s.label)
    return out


def chart(c: Chart) -> str:
    """A line/scatter chart with axes, round ticks, optional error bars, horizontal reference lines, legend."""
    series = [_finite(s.points, c.log_x) for s in c.series]
    skipped = sum(len(s.points) for s in c.series) - sum(map(len, series))
    head = (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{c.width}" height="{c.height}" '
            f'viewBox="0 0 {c.width} {c.height}" role="img" style="{FONT};font-size:10px">'
            f"<title>{esc(c.title)}</title>"
            f'<text x="{MARGIN["left"]}" y="14" font-size="12" font-weight="600">{esc(c.title)}</text>')
    f = _frame(c, series)
    if f is None:
        return head + f'<text x="{c.width / 2}" y="{c.height / 2}" text-anchor="middle">no finite values</text></svg>'
    body = _axes(c, f)
    for y, label in c.hlines:
        py = f.py(y)
        body.append(f'<line x1="{f.left}" x2="{c.width - MARGIN["right"]}" y1="{py:.1f}" y2="{py:.1f}" '
                    f'stroke="#b00" stroke-dasharray="3 3"/><text x="{c.width - MARGIN["right"] - 2}" '
                    f'y="{py - 3:.1f}" text-anchor="end" fill="#b00">{esc(label)}</text>')
    for i, (s, pts) in enumerate(zip(c.series, series, strict=True)):
        body += _series_svg(s, pts, f, s.color or PALETTE[i % len(PALETTE)])
    body += _legend(c, f)
    note = c.note + (f" ({skipped} non-finite values not drawn)" if skipped else "")
    if note:
        body.append(f'<text x="{c.width - MARGIN["right"]}" y="14" text-anchor="end" fill="#b00">{esc(note)}</text>')
    return head + "".join(body) + "</svg>"


# ---------------------------------------------------------------------------------------------------------------
# the stage timeline


@dataclass
class Span:
    row: str  # the stage
    start: float  # seconds since the run started
    end: float
    state: str  # done, failed, cached, running, interrupted
    label: str  # tooltip


STATE_COLORS = {"done": "#2a9d4b", "failed": "#c62828", "cached": "#1f6fb4", "running": "#c49a00",
                "interrupted": "#c62828", "skipped": "#9e9e9e"}


def timeline(spans: list[Span], total: float, width: int = 900) -> str:
    """One row per stage, one bar per attempt (a cache hit is a thin tick), on a shared seconds axis."""
    rows = list(dict.fromkeys(s.row for s in spans))
    label_w, row_h = 170, 20
    height = MARGIN["top"] + row_h * len(rows) + MARGIN["bottom"]
    f = _Frame(0.0, max(total, 1e-3), 0, 1, width, height, left=label_w, top=MARGIN["top"])
    out = [f'<svg class="chart timeline" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" style="{FONT};font-size:11px"><title>stage timeline</title>']
    bottom = height - MARGIN["bottom"]
    for t in nice_ticks(0.0, f.x1, 8):
        x = f.px(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{MARGIN["top"]}" y2="{bottom}" stroke="#eee"/>'
                   f'<text x="{x:.1f}" y="{bottom + 13}" text-anchor="middle">{esc(fmt_num(t))} s</text>')
    for i, name in enumerate(rows):
        y = MARGIN["top"] + i * row_h
        out.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{esc(name)}</text>')
    for s in spans:
        y = MARGIN["top"] + rows.index(s.row) * row_h + 3
        x0, x1 = f.px(s.start), f.px(s.end)
        w = max(x1 - x0, 2.0)
        color = STATE_COLORS.get(s.state, "#666")
        out.append(f'<rect x="{x0:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 6}" fill="{color}" rx="2">'
                   f"<title>{esc(s.label)}</title></rect>")
    return "".join(out) + "</svg>"


# ---------------------------------------------------------------------------------------------------------------
# the lineage graph


@dataclass
class Node:
    id: str
    label: str
    sub: str = ""  # second line: stage type or artifact
    state: str = "done"


def layers(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Longest-path layering: a node sits one layer right of its deepest input (edges are (from, to))."""
    parents: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a in parents and b in parents:
            parents[b].append(a)
    depth: dict[str, int] = {}

    def visit(n: str, seen: frozenset[str]) -> int:
        if n not in depth:
            ps = [p for p in parents[n] if p not in seen]  # a cycle (never in a valid run) is cut, not followed
            depth[n] = 1 + max((visit(p, seen | {n}) for p in ps), default=-1)
        return depth[n]

    for n in nodes:
        visit(n, frozenset())
    return depth


def _edge_path(a: tuple[float, float], b: tuple[float, float], span: int, lift: float) -> str:
    """A curve from box a's right side to box b's left side; an edge skipping layers arcs over the boxes between."""
    x0, y0, x1, y1 = a[0] + BOX_W, a[1] + BOX_H / 2, b[0], b[1] + BOX_H / 2
    if span <= 1:
        mid = (x0 + x1) / 2
        return f"M{x0:.1f},{y0:.1f} C{mid:.1f},{y0:.1f} {mid:.1f},{y1:.1f} {x1:.1f},{y1:.1f}"
    top = min(a[1], b[1]) - lift
    return f"M{x0:.1f},{y0:.1f} C{x0 + 40:.1f},{top:.1f} {x1 - 40:.1f},{top:.1f} {x1:.1f},{y1:.1f}"


BOX_W, BOX_H, GAP_X, GAP_Y, ARC = 124, 34, 30, 14, 14


def dag(nodes: list[Node], edges: list[tuple[str, str, str]]) -> str:
    """Left-to-right layered graph; edges (from, to, label) drawn as curves with the label as tooltip. It scales
    down to the page's width (viewBox)."""
    depth = layers([n.id for n in nodes], [(a, b) for a, b, _ in edges])
    columns: dict[int, list[Node]] = {}
    for n in nodes:
        columns.setdefault(depth[n.id], []).append(n)
    spans = {(a, b): depth.get(b, 0) - depth.get(a, 0) for a, b, _ in edges}
    top = 10 + ARC * max([v for v in spans.values() if v > 1], default=0)  # room for the highest arc
    rows = max((len(c) for c in columns.values()), default=1)
    width = 20 + len(columns) * BOX_W + max(0, len(columns) - 1) * GAP_X
    height = top + rows * (BOX_H + GAP_Y) + 10
    pos = {}
    for col, members in columns.items():
        offset = top + (rows - len(members)) * (BOX_H + GAP_Y) / 2
        for i, n in enumerate(members):
            pos[n.id] = (10 + col * (BOX_W + GAP_X), offset + i * (BOX_H + GAP_Y))
    out = [f'<svg class="chart lineage" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height:.0f}" '
           f'viewBox="0 0 {width} {height:.0f}" role="img" style="{FONT};font-size:11px;max-width:100%;'
           'height:auto"><title>lineage</title><defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" '
           'markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#888"/></marker></defs>']
    for a, b, label in edges:
        if a in pos and b in pos:
            lift = ARC * spans[(a, b)]  # longer edges arc higher: arcs nest instead of crossing
            out.append(f'<path d="{_edge_path(pos[a], pos[b], spans[(a, b)], lift)}" fill="none" stroke="#888" '
                       f'marker-end="url(#arrow)"><title>{esc(label)}</title></path>')
    for n in nodes:
        x, y = pos[n.id]
        color = STATE_COLORS.get(n.state, "#666")
        out.append(f'<g><title>{esc(n.label)} {esc(n.sub)}</title><rect x="{x:.1f}" y="{y:.1f}" width="{BOX_W}" '
                   f'height="{BOX_H}" rx="4" fill="#fff" stroke="{color}" stroke-width="2"/>'
                   f'<text x="{x + 6:.1f}" y="{y + 14:.1f}" font-weight="600">{esc(_clip(n.label, 19))}</text>'
                   f'<text x="{x + 6:.1f}" y="{y + 27:.1f}" fill="#666">{esc(_clip(n.sub, 20))}</text></g>')
    return "".join(out) + "</svg>"


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
