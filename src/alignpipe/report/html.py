"""One self-contained HTML page from a run's record: inline CSS and SVG, no script, no external reference.

Sections, in reading order: the run, findings, evaluation (with intervals and matrix groups), samples (the same
held-out prompts answered by each model), the overoptimization study, every stage's metric curves, the stage
timeline with its table, and the lineage graph. Every string from a spec, a manifest or a model goes through
`esc`: model text is data, never markup.
"""

from __future__ import annotations

import time
from typing import Any

from alignpipe.report import metric_rank, outputs_digest, svg
from alignpipe.report.checks import Finding, findings
from alignpipe.report.collect import Evaluation, RunData, StageRecord
from alignpipe.report.study import Family, Study, study
from alignpipe.report.svg import Chart, Series, esc

Z95 = 1.959963984540054
MAX_POINTS = 300  # per curve: bucketed min/max keep spikes and the file small

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px auto;max-width:1180px;color:#222;
 padding:0 16px;line-height:1.4}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;border-bottom:1px solid #ddd;padding-bottom:3px;
 margin-top:28px}h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{border:1px solid #ddd;padding:3px 7px;
 text-align:left;vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.facts td{border:none;padding:1px 10px 1px 0}.muted{color:#777}.charts{display:flex;flex-wrap:wrap;gap:8px}
.finding{margin:3px 0;padding:4px 8px;border-left:4px solid #c49a00;background:#fff8e1}
.finding.error{border-color:#c62828;background:#fdecea}.ok{color:#2a9d4b}
.samples td{max-width:330px;white-space:pre-wrap;overflow-wrap:anywhere}.score{color:#555;font-size:12px}
.state-failed{color:#c62828;font-weight:600}.state-cached{color:#1f6fb4}.state-done{color:#2a9d4b}
@media print{body{margin:0;max-width:none}h2{break-after:avoid}.chart,table,.finding{break-inside:avoid}}
"""


def _page(title: str, body: list[str], data: RunData | None = None) -> str:
    digest = "" if data is None else (f'<meta name="alignpipe-outputs" content="'
                                      f'{outputs_digest({n: s.outputs for n, s in data.stages.items()})}">')
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">{digest}<title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body>" + "".join(body) + "</body></html>\n")


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "–"


def _secs(s: float | None) -> str:
    return "–" if s is None else f"{s:.1f} s"


# ---------------------------------------------------------------------------------------------------------------
# the run and its findings


def _run_facts(data: RunData) -> str:
    r = data.run
    counts: dict[str, int] = {}
    for s in data.stages.values():
        key = "cached" if s.cached else s.state
        counts[key] = counts.get(key, 0) + 1
    rows = [("run", r["id"]), ("pipeline", r["pipeline"]), ("status", r["status"]),
            ("stages", ", ".join(f"{v} {k}" for k, v in counts.items())), ("started", _when(r["started"])),
            ("wall time", _secs(data.seconds)), ("spec", r["source"]), ("workspace", str(data.workspace)),
            ("host", r.get("host") or "–")]
    return '<table class="facts">' + "".join(f"<tr><td class=muted>{esc(k)}</td><td>{esc(v)}</td></tr>"
                                             for k, v in rows) + "</table>"


def _findings(items: list[Finding]) -> str:
    if not items:
        return '<p class="ok">Nothing to flag: no failed or NaN-stopped stage, KL within target, RM above chance, ' \
               "no length or repetition climb.</p>"
    return "".join(f'<div class="finding {esc(f.level)}"><b>{esc(f.stage)}</b>: {esc(f.text)}</div>' for f in items)


# ---------------------------------------------------------------------------------------------------------------
# evaluation and samples


def _interval(stat: dict[str, float] | None, digits: int = 3) -> str:
    if not stat:
        return "–"
    m, se = stat["mean"], stat["stderr"]
    return (f"{m:.{digits}f} ± {se:.{digits}f} <span class=muted>[{m - Z95 * se:.{digits}f}, "
            f"{m + Z95 * se:.{digits}f}]</span>")


def _rate(rate: dict[str, float] | None) -> str:
    if not rate:
        return "–"
    return f"{rate['rate']:.2f} <span class=muted>[{rate['ci_low']:.2f}, {rate['ci_high']:.2f}]</span>"


def _evaluation(e: Evaluation) -> str:
    m = e.metrics
    base, ref = m.get("baseline"), m.get("reference")
    head = ("<tr><th>model</th><th>gold</th><th>RM score</th><th>KL to " + esc(ref) + " (nats)</th><th>gold win rate "
            "vs " + esc(base) + "</th><th>RM win rate</th><th>length</th><th>finished</th><th>repeated bigrams</th>"
            "</tr>")
    rows = []
    for name, s in _ordered(m).items():
        rep = e.repetition.get(name)
        rows.append(f"<tr><td>{esc(name)}</td><td class=num>{_interval(s.get('gold'))}</td>"
                    f"<td class=num>{_interval(s.get('rm_score'))}</td><td class=num>{_interval(s.get('kl'), 2)}</td>"
                    f"<td class=num>{_rate(s.get('gold_win_rate'))}</td><td class=num>{_rate(s.get('rm_win_rate'))}"
                    f"</td><td class=num>{s['response_length']['mean']:.1f}</td>"
                    f"<td class=num>{s['fraction_finished']:.0%}</td>"
                    f"<td class=num>{'–' if rep is None else f'{rep:.1%}'}</td></tr>")
    note = (f"<p class=muted>{m.get('prompts')} held-out prompts, τ = {m.get('temperature')}; mean ± standard "
            "error [95% interval]; win rates: ties count ½, Wilson 95% interval.</p>")
    return f"<h3>{esc(e.stage)}</h3><table>{head}{''.join(rows)}</table>{note}{_groups(m)}"


def _ordered(m: dict[str, Any]) -> dict[str, Any]:
    """An evaluation's models, the baseline first (metrics.json stores them sorted by name)."""
    models = m.get("models", {})
    base = m.get("baseline")
    return {**({base: models[base]} if base in models else {}), **models}


def _groups(m: dict[str, Any]) -> str:
    """Matrix groups (e.g. three seeds of one model): mean ± sample standard deviation over the branches."""
    groups = m.get("groups") or {}
    if not groups:
        return ""
    rows = []
    for name, g in groups.items():
        cells = "".join(f"<td class=num>{_sd(g.get(k))}</td>" for k in ("gold", "rm_score", "kl"))
        rows.append(f"<tr><td>{esc(name)}</td><td>{len(g['branches'])}: {esc(', '.join(g['branches']))}</td>{cells}"
                    "</tr>")
    return ("<table><tr><th>group</th><th>branches</th><th>gold</th><th>RM score</th><th>KL</th></tr>"
            + "".join(rows) + "</table><p class=muted>groups: seed replicates, mean ± standard deviation across the "
            "branches (each branch's own mean over prompts).</p>")


def _sd(stat: dict[str, float] | None) -> str:
    return "–" if not stat else f"{stat['mean']:.3f} ± {stat['sd']:.3f}"


def _samples(e: Evaluation) -> str:
    models = list(_ordered(e.metrics))
    if not e.responses or not models:
        return ""
    head = "<tr><th>prompt</th>" + "".join(f"<th>{esc(n)}</th>" for n in models) + "</tr>"
    rows = []
    for rec in e.responses:
        cells = []
        for n in models:
            r = rec.get(n, {})
            scores = " · ".join(f"{label} {r[k]:.2f}" for k, label in (("gold", "gold"), ("rm_score", "RM"))
                                if isinstance(r.get(k), float))
            text = r.get("response") or "(empty)"
            cells.append(f"<td>{esc(text)}<div class=score>{esc(scores)}</div></td>")
        rows.append(f"<tr><td>{esc(_prompt_text(rec.get('prompt')))}</td>{''.join(cells)}</tr>")
    return (f"<h3>{esc(e.stage)}: the same held-out prompts, side by side</h3>"
            f'<table class="samples">{head}{"".join(rows)}</table>')


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, list):  # a conversation
        return "\n".join(f"{t.get('role', '?')}: {t.get('content', '')}" for t in prompt if isinstance(t, dict))
    return str(prompt)


# ---------------------------------------------------------------------------------------------------------------
# the overoptimization study


def _fit_text(f: Any) -> str:
    if f is None:
        return "–"
    def ci(c: tuple[float, float] | None) -> str:
        return f" [{c[0]:.3f}, {c[1]:.3f}]" if c else ""

    peak = f"{f.peak:.2f}" if f.peak is not None else "none (still rising)"
    return (f"α = {f.alpha:.3f}{ci(f.alpha_ci)}, β = {f.beta:.3f}{ci(f.beta_ci)}; R² = {f.r2:.3f}, "
            f"RMSE {f.rmse:.3f}, n = {f.n}; fitted peak at d = {peak}")


FORM_TEXT = {"bon": "best-of-n: R(d) = d(α − β·d)", "rl": "PPO: R(d) = d(α − β·log d)"}


def _study_chart(fam: Family) -> str:
    """Gold and proxy gains against d with 95% bars, each with its fitted curve (dashed)."""
    pts = fam.points
    hi = max(p.d for p in pts)
    grid = [hi * i / 60 for i in range(1, 61)]
    series = []
    for what, color in (("gold", svg.PALETTE[0]), ("proxy", svg.PALETTE[1])):
        series.append(Series(f"{what} (VADER)" if what == "gold" else "proxy (Rφ)",
                             [(p.d, getattr(p, what)) for p in pts], color=color, markers=True, line=False,
                             errors=[Z95 * getattr(p, f"{what}_se") for p in pts]))
        f = fam.fits.get(what)
        if f is not None:
            series.append(Series(f"{what} fit", [(d, f.predict(d)) for d in grid], color=color, dashed=True))
    proxy = f" (proxy {fam.proxy})" if fam.proxy else ""
    title = f"{'best-of-n' if fam.form == 'bon' else 'PPO'}{proxy}: gain over πSFT vs d = √KL"
    return svg.chart(Chart(title, series, "d = √KL(π ‖ πSFT)", "score − πSFT's", width=520, height=300))


def _study(st: Study) -> str:
    out = ['<h2 id="overoptimization">Overoptimization: gold and proxy reward vs distance from πSFT</h2>',
           "<p class=muted>Gao et al. (2022): d = √KL(π ‖ πSFT); gains over πSFT on held-out prompts with 95% "
           "intervals; best-of-n KL is the bound log n − (n−1)/n, PPO's the held-out estimate. Fits: least squares "
           "over the points with d > 0; α and β with 95% t-intervals; R² about the mean gain.</p>"]
    for fam in st.families:
        rows = "".join(f"<tr><td>{esc(p.label)}</td><td class=num>{p.d:.3f}</td><td class=num>{p.gold:+.3f}</td>"
                       f"<td class=num>{p.proxy:+.3f}</td></tr>" for p in fam.points)
        fits = "".join(f"<p><b>{what} fit</b>: "
                       f"{esc(_fit_text(fam.fits[what]) if what in fam.fits else fam.errors.get(what, '–'))}</p>"
                       for what in ("gold", "proxy"))
        proxy = f", proxy {fam.proxy}" if fam.proxy else ""
        out.append(f"<h3>{esc(FORM_TEXT[fam.form] + proxy)}</h3><div class=charts>{_study_chart(fam)}<div>"
                   f"<table><tr><th>point</th><th>d</th><th>gold gain</th><th>proxy gain</th></tr>{rows}</table>"
                   f"</div></div>{fits}")
    return "".join(out)


# ---------------------------------------------------------------------------------------------------------------
# metric curves


def chart_groups(names: list[str]) -> list[list[str]]:
    """Metrics drawn together: `X` with `eval_X` (train and held-out), in METRIC_ORDER then alphabetical."""
    names_set = set(names)
    groups = []
    for n in names:
        if n.startswith("eval_") and n[5:] in names_set:
            continue
        groups.append([n] + ([f"eval_{n}"] if f"eval_{n}" in names_set else []))

    return sorted(groups, key=lambda g: metric_rank(g[0]))


def _curves(s: StageRecord, target_lines: dict[str, list[tuple[float, str]]] | None = None) -> str:
    if not s.metrics:
        return ""
    charts = []
    for group in chart_groups(list(s.metrics)):
        series = [Series(n, svg.downsample([(float(x), y) for x, y in s.metrics[n]], MAX_POINTS),
                         markers=len(s.metrics[n]) < 3) for n in group]
        charts.append(svg.chart(Chart(group[0], series, "step", width=280, height=180,
                                      hlines=(target_lines or {}).get(group[0], []))))
    cal = _calibration(s)
    return (f"<h3>{esc(s.name)} <span class=muted>({esc(s.uses)})</span></h3><div class=charts>"
            + "".join(charts) + cal + "</div>")


def _targets(s: StageRecord) -> dict[str, list[tuple[float, str]]]:
    p = s.params
    if s.uses == "ppo" and p.get("kl_control") == "adaptive" and p.get("kl_target") is not None:
        return {"kl": [(float(p["kl_target"]), "target")]}
    if s.uses == "reward":
        return {"accuracy": [(0.5, "chance")]}
    return {}


def _calibration(s: StageRecord) -> str:
    """The reward model's reliability diagram: Bradley-Terry P(chosen ≻ rejected) vs how often it was right."""
    bins = ((s.summary("model").get("eval") or {}).get("calibration") or {}).get("bins") if s.uses == "reward" \
        else None
    if not bins:
        return ""
    pts = [(b["p_mean"], b["accuracy"]) for b in bins if b["count"]]
    series = [Series("held-out pairs", pts, markers=True), Series("ideal", [(0.5, 0.5), (1.0, 1.0)], dashed=True)]
    ece = s.summary("model")["eval"]["calibration"].get("ece")
    return svg.chart(Chart("RM calibration", series, "predicted P(chosen ≻ rejected)", "accuracy", width=280,
                           height=180, note="" if ece is None else f"ECE {ece:.3f}"))


# ---------------------------------------------------------------------------------------------------------------
# timeline, stage table, lineage


def _spans(data: RunData) -> tuple[list[svg.Span], float]:
    t0 = data.run["started"]
    now = data.run.get("ended") or max((a.ended or a.started or t0) for s in data.stages.values()
                                       for a in s.attempts)
    spans = []
    for s in data.stages.values():
        for a in s.attempts:
            start = (a.started or t0) - t0
            end = ((a.ended or now) - t0) if a.status != "cached" else start
            if a.cache_hit:
                label = f"{s.name}: cache hit" + (f" (ran {s.seconds:.1f} s in run {s.produced.run_id})"
                                                  if s.produced and s.seconds is not None else "")
            else:
                label = f"{s.name} attempt {a.attempt}: {a.status}, {end - start:.1f} s"
            spans.append(svg.Span(s.name, start, end, a.status, label))
    return spans, now - t0


def _stage_table(data: RunData) -> str:
    rows = []
    for s in data.stages.values():
        state = "cached" if s.cached else s.state
        dur = s.seconds if not s.cached else None
        cached = "no" if not s.cached else f"yes (ran {_secs(s.seconds)})"
        outs = ", ".join(f"{k} {v[:12]}" for k, v in s.outputs.items()) or "–"
        err = next((ln for ln in (s.last.error or "").splitlines() if ln.strip()), "")
        rows.append(f"<tr><td>{esc(s.name)}</td><td>{esc(s.uses)}</td><td class='state-{esc(state)}'>{esc(state)}"
                    f"</td><td class=num>{len(s.executed)}</td><td class=num>{_secs(dur)}</td><td>{esc(cached)}</td>"
                    f"<td><code>{esc(outs)}</code></td><td>{esc(err)}</td></tr>")
    waiting = "still waiting" if data.run["status"] == "running" else "skipped: an upstream stage did not finish"
    rows += [f"<tr><td>{esc(n)}</td><td>–</td><td class=muted>not started</td><td class=num>0</td><td>–</td>"
             f"<td>–</td><td>–</td><td>{esc(waiting)}</td></tr>" for n in data.not_started]
    return ("<table><tr><th>stage</th><th>type</th><th>state</th><th>attempts</th><th>duration</th><th>cached</th>"
            "<th>artifacts</th><th>error</th></tr>" + "".join(rows) + "</table>")


def lineage_graph(data: RunData) -> tuple[list[svg.Node], list[tuple[str, str, str]]]:
    """Stages (and external inputs) as nodes; an edge per consumed artifact, from the manifests' inputs."""
    made_by = {i: (s.name, o) for s in data.stages.values() for o, i in s.outputs.items()}
    nodes = {s.name: svg.Node(s.name, s.name, s.uses, "cached" if s.cached else s.state)
             for s in data.stages.values()}
    edges: dict[tuple[str, str], list[str]] = {}
    for s in data.stages.values():
        manifest = next(iter(s.manifests.values()), {})
        for name, inp in manifest.get("inputs", {}).items():
            if inp.get("id") in made_by:
                src, out = made_by[inp["id"]]
                key, label = (src, s.name), f"{src}.{out} → {name}"
            else:
                ref = inp.get("external") or inp.get("id", "?")[:12]
                src = f"ext:{ref}"
                nodes.setdefault(src, svg.Node(src, str(ref).rsplit("/", 1)[-1], "external input", "skipped"))
                key, label = (src, s.name), f"{ref} → {name}"
            edges.setdefault(key, []).append(label)
    return list(nodes.values()), [(a, b, "; ".join(labels)) for (a, b), labels in edges.items()]


# ---------------------------------------------------------------------------------------------------------------


def _curve_sections(data: RunData) -> str:
    return "".join(_curves(s, _targets(s)) for s in data.stages.values())


def render(data: RunData) -> str:
    """The report of one run."""
    body = [f"<h1>alignpipe run {esc(data.run['id'])}</h1>", _run_facts(data),
            "<h2>Findings</h2>", _findings(findings(data))]
    if data.evaluations:
        body.append("<h2>Evaluation</h2>")
        body += [_evaluation(e) for e in data.evaluations]
        body.append("<h2>Samples</h2>")
        body += [_samples(e) for e in data.evaluations]
    st = study(data)
    if st is not None:
        body.append(_study(st))
    body += ["<h2>Metric curves</h2>", _curve_sections(data) or "<p class=muted>no stage logged metrics</p>"]
    spans, total = _spans(data)
    body += ["<h2>Stage timeline</h2>", svg.timeline(spans, total), _stage_table(data)]
    nodes, edges = lineage_graph(data)
    body += ["<h2>Lineage</h2>", svg.dag(nodes, edges)]
    body.append(f"<p class=muted>Generated by alignpipe from {esc(data.workspace)} at {_when(time.time())}.</p>")
    return _page(f"alignpipe run {data.run['id']}", body, data)


# ---------------------------------------------------------------------------------------------------------------
# two runs side by side


def _param_diff(a: StageRecord, b: StageRecord) -> str:
    keys = sorted(set(a.params) | set(b.params))
    diff = [k for k in keys if a.params.get(k) != b.params.get(k)]
    return "; ".join(f"{k}: {a.params.get(k)!r} → {b.params.get(k)!r}" for k in diff) or "same params"


def _compare_table(a: RunData, b: RunData) -> str:
    rows = []
    for name in dict.fromkeys([*a.stages, *b.stages]):
        sa, sb = a.stages.get(name), b.stages.get(name)
        cells = [f"{'cached' if s.cached else s.state}, {_secs(s.seconds)}" if s else "–" for s in (sa, sb)]
        same = "same artifacts" if sa and sb and sa.outputs == sb.outputs else ""
        diff = _param_diff(sa, sb) if sa and sb else "only in one run"
        rows.append(f"<tr><td>{esc(name)}</td><td>{esc(cells[0])}</td><td>{esc(cells[1])}</td>"
                    f"<td>{esc(same or diff)}</td></tr>")
    return (f"<table><tr><th>stage</th><th>A {esc(a.run['id'])}</th><th>B {esc(b.run['id'])}</th>"
            "<th>difference</th></tr>" + "".join(rows) + "</table>")


def _compare_curves(a: RunData, b: RunData) -> str:
    out = []
    for name in dict.fromkeys([*a.stages, *b.stages]):
        sa, sb = a.stages.get(name), b.stages.get(name)
        metrics = list(dict.fromkeys([*(sa.metrics if sa else {}), *(sb.metrics if sb else {})]))
        if not metrics:
            continue
        charts = []
        for group in chart_groups(metrics):
            series = [Series(f"{tag} {n}", svg.downsample([(float(x), y) for x, y in s.metrics[n]], MAX_POINTS),
                             color=svg.PALETTE[k], dashed=n.startswith("eval_"), markers=len(s.metrics[n]) < 3)
                      for k, (tag, s) in enumerate((("A", sa), ("B", sb))) if s for n in group if n in s.metrics]
            charts.append(svg.chart(Chart(group[0], series, "step", width=280, height=180)))
        out.append(f"<h3>{esc(name)}</h3><div class=charts>{''.join(charts)}</div>")
    return "".join(out)


def render_compare(a: RunData, b: RunData) -> str:
    """Two runs: stage states and param differences, overlaid curves (A blue, B orange), both evaluations."""
    body = [f"<h1>alignpipe: run A {esc(a.run['id'])} vs run B {esc(b.run['id'])}</h1>",
            "<div class=charts><div><h3>A</h3>", _run_facts(a), "</div><div><h3>B</h3>", _run_facts(b), "</div></div>",
            "<h2>Findings</h2>", "<h3>A</h3>", _findings(findings(a)), "<h3>B</h3>", _findings(findings(b)),
            "<h2>Stages</h2>", _compare_table(a, b)]
    for tag, data in (("A", a), ("B", b)):
        if data.evaluations:
            body.append(f"<h2>Evaluation, run {tag}</h2>")
            body += [_evaluation(e) for e in data.evaluations]
    body += ["<h2>Metric curves (A blue, B orange)</h2>", _compare_curves(a, b)]
    return _page(f"alignpipe: {a.run['id']} vs {b.run['id']}", body)
