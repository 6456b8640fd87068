// The labeling page. Everything from the server is inserted as text (textContent), never as HTML:
// responses are model output, and a response reading <script>...</script> must show as those characters.
"use strict";
(() => {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const $ = (id) => document.getElementById(id);
  const KEYS = {"1": "left", ArrowLeft: "left", "2": "right", ArrowRight: "right", "3": "tie", " ": "skip"};
  let current = null; // the pair on screen
  let busy = false; // one request at a time: a double key press cannot judge two pairs unseen

  async function api(method, path, body) {
    const opts = {method, headers: {"X-CSRF-Token": csrf}, credentials: "same-origin"};
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(path, opts);
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      const e = new Error(typeof data.detail === "string" ? data.detail : r.statusText);
      e.status = r.status;
      throw e;
    }
    return data;
  }

  function setStatus(text, error = false) {
    $("status").textContent = text;
    $("status").className = error ? "error" : "";
  }

  function setBusy(b) {
    busy = b;
    for (const button of document.querySelectorAll("button")) button.disabled = b;
  }

  function renderPrompt(prompt) {
    const turns = Array.isArray(prompt) ? prompt : [{role: null, content: prompt}];
    $("prompt").replaceChildren(...turns.map((t) => {
      const div = document.createElement("div");
      div.className = "turn";
      if (t.role) {
        const role = document.createElement("span");
        role.className = "role";
        role.textContent = t.role;
        div.append(role);
      }
      const content = document.createElement("span");
      content.className = "content";
      content.textContent = String(t.content ?? "");
      div.append(content);
      return div;
    }));
  }

  function renderProgress(p) {
    $("progress").textContent = [
      `you: ${p.mine} judged` + (p.my_skips ? `, ${p.my_skips} skipped` : ""),
      `everybody: ${p.votes} of ${p.target} judgments`,
      `${p.remaining} of ${p.pairs} pairs to go`,
    ].join(" · ");
  }

  function show(pair, progress) {
    current = pair;
    if (progress) renderProgress(progress);
    $("task").hidden = !pair;
    $("done").hidden = !!pair;
    if (!pair) {
      $("done-text").textContent = progress && progress.finished
        ? "Labeling is finished. Thank you!"
        : "Nothing left for you right now. Thank you! Pairs others leave open may come back: reload later.";
      return;
    }
    $("task").dataset.pair = pair.key; // which pair is on screen (scripts and tests read it)
    renderPrompt(pair.prompt);
    $("left-text").textContent = pair.left;
    $("right-text").textContent = pair.right;
    $("reason").value = "";
    window.scrollTo(0, 0);
  }

  async function refresh() {
    const s = await api("GET", "/api/state");
    $("me").textContent = s.me;
    $("admin-link").hidden = !s.admin;
    $("guidelines-text").textContent = s.guidelines || "";
    $("guidelines").hidden = !s.guidelines;
    show(s.pair, s.progress);
  }

  async function submit(choice) {
    if (busy || !current) return;
    setBusy(true);
    const body = {pair: current.key, choice, reason: $("reason").value.trim() || null};
    for (let attempt = 1; ; attempt++) {
      try {
        const r = await api("POST", "/api/judge", body);
        setStatus(r.duplicate ? "already saved" : `saved: ${choice === "left" ? "A" : choice === "right" ? "B" : choice}`);
        show(r.pair, r.progress);
        break;
      } catch (e) {
        if (e.status === 409) { // completed by others meanwhile, or labeling finished: show what is current
          setStatus(e.message, true);
          await refresh().catch(() => {});
          break;
        }
        if (e.status && e.status < 500) {
          setStatus(`not saved: ${e.message}`, true);
          break;
        }
        // the server is unreachable (restarting?): send the same judgment again; a repeat is recognized, not doubled
        setStatus("not saved yet: the server is unreachable, retrying…", true);
        await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 500 * attempt)));
      }
    }
    setBusy(false);
  }

  async function undo() {
    if (busy) return;
    setBusy(true);
    try {
      const r = await api("POST", "/api/undo");
      setStatus("undone: judge this pair again");
      show(r.pair, r.progress);
    } catch (e) {
      setStatus(e.message, true);
    }
    setBusy(false);
  }

  for (const button of document.querySelectorAll("button[data-choice]")) {
    button.addEventListener("click", () => {
      button.blur(); // a focused button would also take the next space or enter press
      submit(button.dataset.choice);
    });
  }
  $("undo").addEventListener("click", () => {
    $("undo").blur();
    undo();
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.target.closest("textarea, input") || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.key in KEYS) {
      ev.preventDefault();
      submit(KEYS[ev.key]);
    } else if (ev.key === "u" || ev.key === "U") {
      ev.preventDefault();
      undo();
    }
  });
  refresh().catch((e) => setStatus(`could not load: ${e.message}`, true));
})();
