"""Write docs/benchmarks.md from benchmarks/results/*.json (and hand-written benchmarks/notes/<name>.md)."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any

from benchmarks.harness import BUSY_CORES, MIN_RESOLVED_S, REPO, ROOT, load_results

DOC = REPO / "docs" / "benchmarks.md"
NOTES = ROOT / "notes"

# Issue 4's measurements, so the doc says plainly which ones have no figures yet.
PLANNED = {
    "limit": "4. The limit: matmul GFLOP/s (fp32, bf16)",
    "orchestration": "5. Orchestration overhead vs DVC",
    "sft": "1. SFT tokens/s vs TRL SFTTrainer (target ≥ 2.0×)",
    "reward": "2. Reward model pairs/s vs TRL RewardTrainer (target ≥ 1.5×)",
    "rl_step": "3. RL step samples/s: PPO vs TRL RLOO / GRPO (target ≥ 1.5× RLOO); rollout tokens/s",
    "end_to_end": "6. End to end: default pipeline wall time per stage (target ≤ 5 min)",
    "quality": "7. Quality at equal budget: gold score and KL, PPO vs RLOO",
    "mlflow_tracking": "8. MLflow tracking's cost to a training stage (target: within 5 %)",
    "scaling": "9. Scaling out: DDP efficiency, SFT cost from ~1M to 124M vs TRL",
    "placement": "9b. PPO placement: split, the critic apart, separate, replicas vs colocated",
}


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "–"
    if unit == "s" and abs(v) < 1:
        ms = v * 1000
        return f"{ms:.1f} ms" if abs(ms) < 10 else f"{ms:.0f} ms"
    if abs(v) >= 100:
        num = f"{v:,.0f}"
    elif abs(v) >= 10:
        num = f"{v:.1f}"
    else:
        num = f"{v:.2f}"
    return f"{num} {unit}"


def _range(ser: dict[str, Any], unit: str) -> str:
    lo, hi = fmt(ser["min"], unit), fmt(ser["max"], unit)
    same_unit = lo.rsplit(" ", 1)[-1] == hi.rsplit(" ", 1)[-1]
    return f"{lo.rsplit(' ', 1)[0]}–{hi}" if same_unit else f"{lo}–{hi}"


def cell(ser: dict[str, Any] | None, unit: str) -> str:
    if ser is None:
        return "–"
    return f"**{fmt(ser['median'], unit)}** ({_range(ser, unit)}, n={ser['n']})"


def ratio_cell(row: dict[str, Any]) -> str:
    r = row["ratio"]
    if r is None:
        return "–"
    word = "ahead" if r >= 1 else "**behind**"
    return f"{r:.2f}× {word}"


def target_cell(row: dict[str, Any]) -> str:
    if row["target"] is None:
        return "–"
    mark = "✅" if row["met"] else "❌"
    return f"≥ {row['target']:g}× {mark}"


def load_cell(row: dict[str, Any]) -> str:
    sers = [s for s in (row["ours"], row["peer"]) if s]
    med = max(s["others_cores_median"] for s in sers)
    hi = max(s["others_cores_max"] for s in sers)
    busy = sum(s["busy"] for s in sers)
    flag = " ⚠" if med > BUSY_CORES or busy else ""
    extra = f", {busy} busy" if busy else ""
    redone = sum(len(s["all"]) - s["n"] for s in sers)
    redo = f", {redone} redone" if redone else ""
    steal = max(s.get("steal_cores_median", 0.0) for s in sers)
    stolen = f", VM steal {steal:.2f}" if steal >= 0.05 else ""
    return f"{med:.2f} / {hi:.2f}{flag}{extra}{redo}{stolen}"


def _summary_rows(results: list[dict[str, Any]]) -> list[str]:
    out = ["| benchmark | measurement | alignpipe | peer | alignpipe's advantage | target | others' load, cores |",
           "|---|---|---|---|---|---|---|"]
    for res in results:
        for row in res["rows"]:
            if row.get("pivot") or row["name"].startswith("↳"):
                continue
            peer = f"{row['peer_label']}: {fmt(row['peer']['median'], row['unit'])}" if row["peer"] else "–"
            out.append(f"| {res['benchmark']} | {row['name']} | {fmt(row['ours']['median'], row['unit'])} | {peer} | "
                       f"{ratio_cell(row)} | {target_cell(row)} | {load_cell(row)} |")
    return out


def _behind(results: list[dict[str, Any]]) -> list[str]:
    out = []
    for res in results:
        for row in res["rows"]:
            if row["ratio"] is not None and (row["ratio"] < 1 or row["met"] is False):
                out.append(f"- **{res['benchmark']} / {row['name']}**: {ratio_cell(row).replace('**', '')} "
                           f"({row['ours_label']} {fmt(row['ours']['median'], row['unit'])} vs {row['peer_label']} "
                           f"{fmt(row['peer']['median'], row['unit'])})"
                           + (f", target ≥ {row['target']:g}×" if row["target"] is not None else ""))
    return out or ["- nothing measured so far is behind its peer."]


def _pivot(rows: list[dict[str, Any]]) -> list[str]:
    """One compact matrix per unit for rows that declared a (row label, column label) place."""
    out: list[str] = []
    for unit in dict.fromkeys(r["unit"] for r in rows if r.get("pivot")):
        piv = [r for r in rows if r.get("pivot") and r["unit"] == unit]
        row_labels = list(dict.fromkeys(r["pivot"][0] for r in piv))
        cols = list(dict.fromkeys(r["pivot"][1] for r in piv))
        val = {tuple(r["pivot"]): r for r in piv}
        out += [f"Medians, {unit} (⚠ = others used > {BUSY_CORES} cores):", "",
                "| | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for rl in row_labels:
            cells = []
            for c in cols:
                r = val.get((rl, c))
                cells.append("–" if r is None else fmt(r["ours"]["median"], "").strip()
                             + (" ⚠" if r["ours"]["others_cores_median"] > BUSY_CORES else ""))
            out.append(f"| {rl} | " + " | ".join(cells) + " |")
        out.append("")
    return out


def _table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    has_peer = any(r["peer"] for r in rows)
    head = ["measurement", "alignpipe"] + (["peer", "advantage", "target"] if has_peer else []) + \
        ["others' load, cores (median / max)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"] + (f" <br><sub>{r['note']}</sub>" if r["note"] else ""), cell(r["ours"], r["unit"])]
        if has_peer:
            peer = f"{r['peer_label']}: {cell(r['peer'], r['unit'])}" if r["peer"] else "–"
            cells += [peer, ratio_cell(r), target_cell(r)]
        cells.append(load_cell(r))
        out.append("| " + " | ".join(cells) + " |")
    return out + [""]


def _charts(res: dict[str, Any]) -> list[str]:
    from benchmarks import plots

    paths = [plots.ab_chart(res)]
    paths += [plots.pivot_chart(res, u) for u in dict.fromkeys(r["unit"] for r in res["rows"] if r.get("pivot"))]
    rel = [os.path.relpath(p, DOC.parent) for p in paths if p is not None]
    return [*(f"![{Path(p).stem}]({p})" for p in rel), ""] if rel else []


def _loadavg_range(rows: list[dict[str, Any]]) -> str:
    la = [smp["loadavg"][0] for r in rows for ser in (r["ours"], r["peer"]) if ser for smp in ser["all"]]
    return f"{min(la):.2f}–{max(la):.2f}" if la else "–"


def _config(cfg: dict[str, Any]) -> list[str]:
    if not cfg:
        return []
    out = ["| setting | value |", "|---|---|"]
    for k, v in cfg.items():
        text = ", ".join(map(str, v)) if isinstance(v, list) else str(v)
        text = text.replace("|", "\\|")
        out.append(f"| {k} | {text} |")
    return out + [""]


def _env_line(env: dict[str, Any]) -> str:
    keys = ("cpu", "cores", "kernel", "python", "alignpipe", "git", "torch", "transformers", "peft",
            "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    parts = [f"{k} {env[k]}" for k in keys if env.get(k) is not None]
    parts += [f"{k} {v}" for k, v in env.items() if k not in keys and v is not None]
    return "; ".join(parts)


def _section(res: dict[str, Any]) -> list[str]:
    out = [f"## {res['title']}", "", f"`python -m benchmarks {res['benchmark']}` — measured {res['date']}, "
           f"took {res['duration_s']:.0f} s.", "", res["doc"], "", f"Environment: {_env_line(res['env'])}.", ""]
    out += _config(res["config"])
    out += _charts(res)
    out += _pivot(res["rows"])
    out += _table([r for r in res["rows"] if not r.get("pivot")])
    piv = [r for r in res["rows"] if r.get("pivot")]
    if piv:
        out += ["<details><summary>every configuration: median (min–max, n) and load</summary>", "",
                *_table(piv), "</details>", ""]
    out += [f"1-minute load average during the samples: {_loadavg_range(res['rows'])} (2 cores).", ""]
    for n in res["notes"]:
        out += [f"- {n}"]
    if res["notes"]:
        out.append("")
    hand = NOTES / f"{res['benchmark']}.md"
    if hand.exists():
        out += [hand.read_text().rstrip(), ""]
    return out


def write(path: Path = DOC) -> Path:
    results = load_results()
    have = {r["benchmark"] for r in results}
    today = _dt.date.today().isoformat()
    lines = [
        "# Benchmarks",
        "",
        "Reproduce (peers install into their own venvs under `benchmarks/`, nothing of theirs becomes a "
        "dependency of alignpipe):",
        "",
        "```bash",
        "bash benchmarks/setup_peers.sh      # DVC and TRL 1.16 venvs (torch 2.13.0 CPU installed first)",
        "python -m benchmarks                # every benchmark, then rewrites this file",
        "python -m benchmarks orchestration  # one benchmark; the others' saved results are kept",
        "python -m benchmarks --doc          # only rewrite this file from benchmarks/results/*.json",
        "```",
        "",
        f"This file is generated ({today}) by `benchmarks/report.py` from `benchmarks/results/*.json`; "
        "hand-written analysis lives in `benchmarks/notes/<benchmark>.md` and is included below its section.",
        "",
        "**Method.** alignpipe (A) and the peer (B) run interleaved, A B A B …, after one unrecorded warm-up "
        "round (unless its section says otherwise); each cell is the **median** (min–max, n) of the repeats. "
        "*Advantage* is the ratio of medians "
        "oriented so that > 1× means alignpipe is ahead (peer time ÷ our time, or our throughput ÷ peer "
        "throughput). The machine has 2 cores and is **shared** with other engineers' test runs: around every "
        "sample the harness reads `/proc/stat` and subtracts our own process's and children's CPU time "
        "(`getrusage`) from the system's busy time to estimate the cores *other* processes kept busy. A sample "
        f"where others used more than {BUSY_CORES} cores is *busy*: the harness then idles (bounded) for the "
        "others to go quiet, and busy rounds are redone (bounded); when "
        "too few quiet rounds could be had, all rounds count and the row is marked ⚠ (samples shorter than "
        f"{MIN_RESOLVED_S:g} s are never called busy: /proc/stat counts 10 ms ticks). Hypervisor steal time is "
        "recorded too and shown when it is not negligible. "
        "Torch work, ours and the peer's, runs with the OpenMP wait policy alignpipe's stage processes pick on a "
        "quiet machine (`GOMP_SPINCOUNT=1000`, see `alignpipe.pipeline.cpu`) unless a row says otherwise; "
        "`alignpipe run` (end_to_end) lets each stage process pick its own.",
        "",
        "## Summary",
        "",
        *_summary_rows(results),
        "",
        "### Where alignpipe is behind",
        "",
        *_behind(results),
        "",
        "### Not measured yet",
        "",
        *([f"- {v}" for k, v in PLANNED.items() if k not in have] or ["- every planned benchmark has results."]),
        "",
    ]
    for res in results:
        lines += _section(res)
    lines += [
        "## Adding a benchmark",
        "",
        "A module `benchmarks/<name>.py` with a function decorated `@benchmark(\"<name>\", title=..., peers=(...))` "
        "receiving a `Bench`: `b.compare(name, Metric(unit, \"lower\"|\"higher\", target=...), ours=fn, "
        "peer=(label, fn))` for an interleaved A/B row, `b.figure(...)` for a single figure, or `b.interleave([...])` "
        "plus `b.add_row(...)` for anything else; `b.config(...)`, `b.note(...)`, `b.extra[...]`. A sample "
        "function returns its figure, or None for its own wall seconds. Peer code runs in its venv "
        "(`peers.bin_path(\"trl\", \"python\")`, `harness.run_json(cmd)` for a worker printing JSON). The module "
        "docstring becomes its description here; the result file format is documented in `benchmarks/harness.py`.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
