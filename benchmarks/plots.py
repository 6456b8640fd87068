"""PNG charts for docs/benchmarks.md, drawn from the saved results (skipped when matplotlib is missing).

Every A/B row of a benchmark becomes a pair of bars (median, whiskers min–max); every pivot table becomes a
grouped bar chart. Charts live next to the results they are drawn from (benchmarks/results/<name>*.png).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from benchmarks.harness import RESULTS


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _errs(sers: list[dict[str, Any]]) -> list[list[float]]:
    return [[s["median"] - s["min"] for s in sers], [s["max"] - s["median"] for s in sers]]


def ab_chart(res: dict[str, Any]) -> Path | None:
    """Bars per A/B row, normalized to the peer's median (peer = 1.0) so rows of any unit share one axis."""
    rows = [r for r in res["rows"] if r["peer"]]
    plt = _plt()
    if not rows or plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.7 * len(rows)))
    for i, r in enumerate(rows):
        base = r["peer"]["median"]
        for j, (ser, color) in enumerate(((r["ours"], "#2a7ab9"), (r["peer"], "#b0b0b0"))):
            rel = {k: ser[k] / base for k in ("median", "min", "max")}
            ax.barh(i * 3 + j, rel["median"], xerr=_errs([rel]), color=color, capsize=3,
                    label=(ser["label"] if j else "alignpipe") if i == 0 or j else None)
            ax.text(rel["max"] + 0.03, i * 3 + j, f"{ser['label']}: {ser['median']:.3g} {r['unit']}", va="center",
                    fontsize=8)
    ax.set_yticks([i * 3 + 0.5 for i in range(len(rows))], [r["name"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(1.0, color="k", lw=0.5)
    ax.set_xlabel("relative to the peer's median (lower is better for times)")
    ax.set_xlim(0, max(r["ours"]["max"] / r["peer"]["median"] for r in rows) * 1.6 + 0.3)
    ax.set_title(res["title"], fontsize=10)
    fig.tight_layout()
    out = RESULTS / f"{res['benchmark']}-ab.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _file_part(unit: str) -> str:
    """A unit as part of a file name a Markdown link can point at: 'GFLOP/s' -> 'GFLOP_per_s',
    '% of fp32 peak' -> 'pct_of_fp32_peak'."""
    s = unit.replace("/", "_per_").replace("%", "pct")
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_")


def pivot_chart(res: dict[str, Any], unit: str) -> Path | None:
    rows = [r for r in res["rows"] if r.get("pivot") and r["unit"] == unit]
    plt = _plt()
    if not rows or plt is None:
        return None
    labels = list(dict.fromkeys(r["pivot"][0] for r in rows))
    cols = list(dict.fromkeys(r["pivot"][1] for r in rows))
    val = {tuple(r["pivot"]): r["ours"] for r in rows}
    width = 0.8 / len(cols)
    fig, ax = plt.subplots(figsize=(9, 4))
    for j, c in enumerate(cols):
        sers = [val.get((lab, c)) for lab in labels]
        xs = [i + j * width for i, s in enumerate(sers) if s]
        got = [s for s in sers if s]
        ax.bar(xs, [s["median"] for s in got], width, yerr=_errs(got), capsize=2, label=c)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(labels))], labels, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel(unit)
    ax.legend(fontsize=7)
    ax.set_title(f"{res['title']} — {unit}", fontsize=10)
    fig.tight_layout()
    out = RESULTS / f"{res['benchmark']}-{_file_part(unit)}.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
