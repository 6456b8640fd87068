// The admin page: progress, agreement, annotators; "finish" freezes the judgments. Text only, never HTML.
"use strict";
(() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const fmt = (x, digits = 2) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));

  function row(cells) {
    const tr = document.createElement("tr");
    for (const c of cells) {
      const td = document.createElement("td");
      td.textContent = String(c);
      tr.append(td);
    }
    return tr;
  }

  function render(s) {
    const p = s.progress;
    $("title").textContent = s.title;
    $("progress").textContent = `${p.votes} of ${p.target} judgments (overlap ${p.overlap}); ` +
      `${p.complete} of ${p.pairs} pairs complete` + (p.finished ? `; finished (${p.finished})` : "");
    $("finish").disabled = !!p.finished;
    const a = s.agreement;
    const o = a.outcomes;
    $("agreement").tBodies[0].replaceChildren(
      row(["Fleiss' kappa (pairs with 2+ votes)", fmt(a.fleiss_kappa, 3)]),
      row(["mean Cohen's kappa over annotator pairs", fmt(a.cohen_kappa_mean, 3)]),
      row(["pairs with votes / with overlap", `${a.pairs_with_votes} / ${a.pairs_with_overlap}`]),
      row(["majority outcome: A / B / tie / split", `${o.a} / ${o.b} / ${o.tie} / ${o.split}`]),
    );
    $("annotators").tBodies[0].replaceChildren(...Object.entries(s.annotators).map(([name, x]) => row([
      name, x.judgments, x.skips,
      x.agreement_with_majority ? `${fmt(x.agreement_with_majority.rate)} (of ${x.agreement_with_majority.of})` : "–",
      x.median_dwell_s === null ? "–" : `${fmt(x.median_dwell_s, 1)} s`,
    ])));
  }

  async function load() {
    const r = await fetch("/api/admin", {credentials: "same-origin"});
    if (!r.ok) throw new Error((await r.json().catch(() => ({}))).detail || r.statusText);
    render(await r.json());
  }

  $("finish").addEventListener("click", async () => {
    if (!window.confirm("Finish labeling? Judgments are frozen and the pipeline continues.")) return;
    const r = await fetch("/api/admin/finish", {method: "POST", headers: {"X-CSRF-Token": csrf},
                                                credentials: "same-origin"});
    const data = await r.json().catch(() => ({}));
    $("status").textContent = r.ok ? `finished: ${data.finished}` : `refused: ${data.detail}`;
    load().catch(() => {});
  });
  const tick = () => load().catch((e) => { $("status").textContent = `could not load: ${e.message}`; });
  tick();
  setInterval(tick, 5000);
})();
