"""The labeling page under load: 20 scripted annotators (real HTTP clients, one thread each, in a process of
their own) against `alignpipe label serve` (its own process, uvicorn, 127.0.0.1) on one SQLite job with
overlap 2, for a bounded time (60 s per run).

Two loads: people-paced (each annotator pauses 0.2-1.0 s before each judgment: still 5-10x faster than people
read two responses) and a closed loop with no pause at all. In a closed loop latency is queueing: with 20
clients, mean latency = 20 / throughput (Little's law), so it measures capacity more than responsiveness.

A submit is POST /api/judge: the judgment is committed (WAL, synchronous=FULL: an fsync) before the reply,
which also carries the annotator's next pair. Figures: submit latency p50 and p99 as the annotators saw it, and
judgments per second. Afterwards the SQLite file is read: `lost` counts acknowledged judgments missing from it,
`duplicated` the (pair, annotator) pairs stored more than once; both must be 0. No peer: the target is the
issue's, p99 < 50 ms.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import REPO, Bench, Metric, benchmark

ANNOTATORS = 20
SECONDS = 60.0
PAIRS = 30000  # more than 20 annotators can judge in a minute at overlap 2
WORKER = REPO / "benchmarks" / "workers" / "label_annotators.py"


def _job(path: Path) -> list[str]:
    """A fresh labeling job with PAIRS pairs and ANNOTATORS tokens."""
    from alignpipe.labeling.db import LabelDB

    db = LabelDB(path)
    db.configure(overlap=2, seed=0, guidelines="benchmark", title="load", lease_seconds=600)
    db.add_pairs((f"{i}:0:1", f"Review product {i}.", f"A good product, number {i}. " * 4,
                  f"Not so good, number {i}. " * 4) for i in range(PAIRS))
    tokens = [db.invite(f"annotator{k:02d}") for k in range(ANNOTATORS)]
    db.close()
    return tokens


def _serve(db: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "alignpipe", "label", "serve", "--db", str(db)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = proc.stdout.readline().split()[-1]
    return proc, url


MODES = {"paced": (0.2, 1.0), "closed loop": (0.0, 0.0)}


def load_once(workdir: Path, seconds: float, think: tuple[float, float], runs: list[dict[str, Any]]) -> float:
    """One full load run on a fresh job; appends its details to `runs`; returns the p99 submit latency (ms)."""
    from alignpipe.labeling.db import LabelDB

    job = Path(tempfile.mkdtemp(prefix="run", dir=workdir))
    tokens = _job(job / "labels.db")
    (job / "tokens.json").write_text(json.dumps(tokens))
    server, url = _serve(job / "labels.db")
    try:
        cmd = [sys.executable, str(WORKER), url, str(job / "tokens.json"), str(seconds), *map(str, think)]
        p = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=seconds + 120)
    finally:
        server.terminate()
        server.wait(timeout=30)
    result = json.loads(p.stdout.splitlines()[-1])
    lat = sorted(x for a in result["annotators"].values() for x in a["latencies_ms"])
    acked = [tuple(x) for a in result["annotators"].values() for x in a["acked"]]
    stored = [(j["annotator"], j["pair"]) for j in LabelDB(job / "labels.db").judgments()]
    run = {"submits": len(lat), "wall_s": result["wall_s"], "per_s": len(lat) / result["wall_s"],
           "p50_ms": statistics.median(lat), "p99_ms": lat[int(0.99 * (len(lat) - 1))], "max_ms": lat[-1],
           "lost": len(set(acked) - set(stored)), "duplicated": len(stored) - len(set(stored)),
           "unacknowledged_stored": len(set(stored) - set(acked)),
           "errors": sum(len(a["errors"]) for a in result["annotators"].values()),
           "ran_out": sum(a["ran_out"] for a in result["annotators"].values())}
    runs.append(run)
    return run["p99_ms"]


@benchmark("labeling", title="Labeling page under load (20 annotators)", order=80)
def run(b: Bench) -> None:
    b.config(annotators=ANNOTATORS, seconds_per_run=SECONDS, pairs=PAIRS, overlap=2,
             think_s={m: list(t) for m, t in MODES.items()},
             server="alignpipe label serve (uvicorn, 1 process) on 127.0.0.1", sqlite="WAL, synchronous=FULL")
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    fns = [lambda m=m: load_once(b.workdir, SECONDS, MODES[m], runs[m]) for m in MODES]
    for mode, samples in zip(MODES, b.interleave(fns, repeats=b.repeats, warmup=0, max_redo=0), strict=True):
        b.add_row(f"{mode}: submit latency p99", Metric("ms", "lower"), b.series("alignpipe", samples),
                  note="target < 50 ms")
        for key, name, unit, better in (("p50_ms", "submit latency p50", "ms", "lower"),
                                        ("per_s", "judgments per second", "judgments/s", "higher"),
                                        ("lost", "lost (acknowledged, not stored)", "count", "lower"),
                                        ("duplicated", "duplicated", "count", "lower")):
            derived = [type(s)(float(r[key]), s.wall_s, s.others_cores, s.own_cpu_s, s.loadavg, s.busy, s.used,
                               s.steal_cores) for s, r in zip(samples, runs[mode], strict=True)]
            b.add_row(f"{mode}: {name}", Metric(unit, better), b.series("alignpipe", derived))
        done = runs[mode]
        b.note(f"{mode}: p99 per run " + ", ".join(f"{r['p99_ms']:.1f}" for r in done) + " ms; "
               f"{sum(r['submits'] for r in done)} acknowledged submits, lost {sum(r['lost'] for r in done)}, "
               f"duplicated {sum(r['duplicated'] for r in done)}, errors {sum(r['errors'] for r in done)}.")
    b.extra["runs"] = runs
    b.note("`others` is the CPU the rest of this shared machine used meanwhile (the server and the annotators "
           "are our own child processes, counted as ours).")
