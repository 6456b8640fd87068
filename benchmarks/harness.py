"""The measuring harness: registry, interleaved repeats, load accounting, result files.

A benchmark is a function registered with `@benchmark`; it receives a `Bench` and records rows:

    @benchmark("orchestration", title="Orchestration overhead", peers=("dvc",))
    def run(b: Bench) -> None:
        b.config(stages=7, edges=9)
        b.compare("no-op rerun", Metric("s", "lower", target=1.0),
                  ours=lambda: sh(["alignpipe", "run", ...]) and None,
                  peer=("dvc repro", lambda: sh(["dvc", "repro"], cwd=...) and None), repeats=7)
        b.figure("publish", Metric("MB/s", "higher"), publish_once)
        a, b_, c = b.interleave([fa, fb, fc], repeats=5)        # any number of fns, round-robin
        b.add_row("custom", Metric("tokens/s", "higher", target=2.0), b.series("alignpipe", a),
                  b.series("TRL SFTTrainer", b_))
        b.extra["peak"] = {...}                                 # free-form data later phases can read

A sample function returns the figure of one repeat in the row's unit, or None to mean "my wall time in
seconds". Around every sample the harness reads /proc/stat and getrusage to estimate how much CPU *other*
processes used meanwhile (system busy time minus our own process's and our waited-for children's CPU time),
because the machine is shared. A sample during which others used more than `BUSY_CORES` cores is "busy";
`compare` and `figure` redo busy repeats (bounded) and compute the statistics over the quiet ones when there
are enough of them, else over all of them and the row is marked noisy.

Result file (benchmarks/results/<name>.json, schema_version 1):

    {"schema_version": 1, "benchmark": name, "title": ..., "doc": module docstring,
     "date": ISO-8601, "duration_s": ..., "env": {cpu, cores, python, versions...},
     "method": {min_repeats, wait_quiet_s, busy_cores, min_resolved_s},
     "config": {...}, "notes": [markdown strings], "extra": {...free-form data for later phases...},
     "rows": [{"name", "unit", "better": "lower"|"higher", "note",
               "ours": Series, "peer": Series | null, "ours_label", "peer_label",
               "ratio": ours' advantage (>1 = alignpipe ahead) | null, "target": ratio | null, "met": bool | null,
               "pivot": [row label, column label] (optional)}]}
    Series = {"label", "median", "min", "max", "n", "values": [...used...], "all": [Sample...],
              "others_cores_median", "others_cores_max", "own_cores_median", "steal_cores_median",
              "busy": count of busy samples used, "noisy": bool}
    Sample = {"value", "wall_s", "others_cores", "own_cpu_s", "own_cores", "steal_cores",
              "loadavg": [1, 5, 15 min], "busy", "used"}
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignpipe.pipeline.cpu import LoadProbe

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
RESULTS = ROOT / "results"
SCHEMA_VERSION = 1
BUSY_CORES = 0.5  # others using more than this many cores during a sample (a quarter of this 2-core machine)
MIN_RESOLVED_S = 0.1  # shorter samples get a load estimate too coarse to call them busy: batch such work

SampleFn = Callable[[], "float | None"]


# ---------------------------------------------------------------------------------------------------------------
# load accounting


def _loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


@dataclass
class Sample:
    value: float
    wall_s: float
    others_cores: float  # average number of cores other processes kept busy during the sample
    own_cpu_s: float
    loadavg: list[float]
    busy: bool
    used: bool = True
    steal_cores: float = 0.0  # CPU the hypervisor gave to other machines (a VM's invisible neighbours)

    @property
    def own_cores(self) -> float:
        """Cores our process (and its waited-for children) kept busy: < threads when others took our share."""
        return self.own_cpu_s / max(self.wall_s, 1e-9)

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "wall_s": round(self.wall_s, 6), "others_cores": round(self.others_cores, 3),
                "own_cpu_s": round(self.own_cpu_s, 4), "own_cores": round(self.own_cores, 3),
                "steal_cores": round(self.steal_cores, 3), "loadavg": self.loadavg, "busy": self.busy,
                "used": self.used}


def per_cpu_second(samples: list[Sample]) -> list[Sample]:
    """The same samples with each rate (per wall second) turned into a rate per CPU-second we actually got:
    value × wall / own CPU. Robust to other processes taking our cores; meaningful for in-process compute."""
    return [Sample(s.value * s.wall_s / max(s.own_cpu_s, 1e-9), s.wall_s, s.others_cores, s.own_cpu_s, s.loadavg,
                   s.busy, s.used, s.steal_cores) for s in samples]


def measure(fn: SampleFn) -> Sample:
    """Run fn once; its figure (or its wall seconds) with the CPU the rest of the machine used meanwhile."""
    probe = LoadProbe()
    value = fn()
    load = probe.read()
    assert load is not None, "the benchmarks need /proc/stat (Linux)"
    # /proc/stat counts in clock ticks (10 ms): do not judge samples too short to resolve.
    busy = load.others_cores > BUSY_CORES and load.window_s >= MIN_RESOLVED_S
    return Sample(load.window_s if value is None else float(value), load.window_s, load.others_cores,
                  load.own_cpu_s, _loadavg(), busy, steal_cores=load.steal_cores)


# ---------------------------------------------------------------------------------------------------------------
# series, rows and the Bench a benchmark function records into


def _series(label: str, samples: list[Sample]) -> dict[str, Any]:
    used = [s for s in samples if s.used]
    vals = [s.value for s in used]
    others = [s.others_cores for s in used]
    return {"label": label, "median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals),
            "values": vals, "others_cores_median": statistics.median(others), "others_cores_max": max(others),
            "own_cores_median": statistics.median(s.own_cores for s in used),
            "steal_cores_median": statistics.median(s.steal_cores for s in used),
            "busy": sum(s.busy for s in used), "noisy": any(s.busy for s in used),
            "all": [s.to_json() for s in samples]}


def advantage(ours: float, peer: float, better: str) -> float:
    """How many times better alignpipe is (>1 ahead, <1 behind), whichever direction the unit improves in."""
    if better == "higher":
        return ours / peer if peer else float("inf")
    return peer / ours if ours else float("inf")


def _await_quiet(budget: list[float], window_s: float = 0.2) -> None:
    """Idle in short windows until other processes use fewer than BUSY_CORES cores, or budget[0] runs out."""
    while budget[0] > 0:
        probe = LoadProbe()
        time.sleep(window_s)
        budget[0] -= window_s
        load = probe.read()
        if load is None or load.others_cores < BUSY_CORES:
            return


def _pick(groups: list[list[Sample]], repeats: int) -> None:
    """Mark which repeats of one series (or of paired rounds) count: the first `repeats` quiet ones if there are
    that many, else all of them."""
    quiet = [g for g in groups if not any(s.busy for s in g)]
    keep = quiet[:repeats] if len(quiet) >= repeats else groups
    for g in groups:
        for s in g:
            s.used = any(g is k for k in keep)


@dataclass(frozen=True)
class Metric:
    """What a row measures: its unit, which direction is better, and the advantage alignpipe should reach."""

    unit: str
    better: str  # "lower" (times) or "higher" (throughputs)
    target: float | None = None  # required ratio of medians, oriented as `advantage`

    def __post_init__(self) -> None:
        if self.better not in ("lower", "higher"):
            raise ValueError(f"Metric.better must be 'lower' or 'higher', not {self.better!r}")


@dataclass
class Bench:
    name: str
    workdir: Path
    repeats: int = 5  # floor for every row; a row may ask for more
    wait_quiet_s: float = 15.0  # per interleave: seconds one may idle, after a busy sample, for others to go quiet
    verbose: bool = True
    rows: list[dict[str, Any]] = field(default_factory=list)
    cfg: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def config(self, **kw: Any) -> None:
        """Record the configuration the figures were measured under (shown in the doc)."""
        self.cfg.update(kw)

    def note(self, text: str) -> None:
        """A markdown remark shown under the benchmark's table (method caveats, what a figure includes)."""
        self.notes.append(text)

    def log(self, msg: str) -> None:
        if self.verbose:
            print(f"  [{self.name}] {msg}", file=sys.stderr, flush=True)

    def interleave(self, fns: Sequence[SampleFn], *, repeats: int, warmup: int = 1, max_redo: int | None = None,
                   paired: bool = True, wait_quiet_s: float | None = None) -> list[list[Sample]]:
        """Run fns round-robin (A B A B …): `warmup` unrecorded rounds, then rounds until there are `repeats`
        quiet ones or `repeats + max_redo` rounds in all. `paired`: a round is quiet only when all its samples
        are, and rounds are kept or dropped whole (A/B comparisons); unpaired, each fn's quiet samples are
        picked on their own (many configurations of one figure). `wait_quiet_s` (default: the Bench's): a
        budget of seconds to spend, after a busy sample, waiting for the others to go quiet. Returns, per fn, all its
        samples, `used` marking those the statistics take."""
        repeats = max(repeats, self.repeats)
        max_redo = repeats if max_redo is None else max_redo
        for _ in range(warmup):
            for fn in fns:
                fn()
        budget = [self.wait_quiet_s if wait_quiet_s is None else wait_quiet_s]
        rounds: list[list[Sample]] = []
        while len(rounds) < repeats + max_redo:
            row = []
            for fn in fns:
                if row and row[-1].busy or not row and rounds and rounds[-1][-1].busy:
                    _await_quiet(budget)
                row.append(measure(fn))
            rounds.append(row)
            if paired:
                enough = sum(not any(s.busy for s in r) for r in rounds) >= repeats
            else:
                enough = all(sum(not r[i].busy for r in rounds) >= repeats for i in range(len(fns)))
            if enough:
                break
        cols = [[r[i] for r in rounds] for i in range(len(fns))]
        if paired:
            _pick(rounds, repeats)
        else:
            for col in cols:
                _pick([[s] for s in col], repeats)
        return cols

    def compare(self, name: str, metric: Metric, *, ours: SampleFn, peer: tuple[str, SampleFn], repeats: int = 5,
                warmup: int = 1, note: str = "") -> dict[str, Any]:
        """An A/B row: alignpipe (`ours`) vs `peer=(label, fn)`, interleaved A B A B …, with the ratio of
        medians oriented so that > 1 means alignpipe is ahead."""
        peer_label, peer_fn = peer
        a, b = self.interleave([ours, peer_fn], repeats=repeats, warmup=warmup)
        row = self.add_row(name, metric, _series("alignpipe", a), _series(peer_label, b), note=note)
        self.log(f"{name}: alignpipe {row['ours']['median']:.4g} vs {peer_label} {row['peer']['median']:.4g} "
                 f"{metric.unit} -> {row['ratio']:.2f}x (others {row['ours']['others_cores_median']:.2f} cores)")
        return row

    def figure(self, name: str, metric: Metric, fn: SampleFn, *, repeats: int = 5, warmup: int = 1,
               label: str = "alignpipe", note: str = "") -> dict[str, Any]:
        """A single-figure row (no peer): e.g. MB/s of publish, GFLOP/s of a matmul."""
        (a,) = self.interleave([fn], repeats=repeats, warmup=warmup)
        return self.add_row(name, metric, _series(label, a), note=note)

    def series(self, label: str, samples: list[Sample]) -> dict[str, Any]:
        """Summarize samples from `interleave` (for rows built by hand from a multi-way interleave)."""
        return _series(label, samples)

    def add_row(self, name: str, metric: Metric, ours: dict[str, Any], peer: dict[str, Any] | None = None, *,
                note: str = "", pivot: tuple[str, str] | None = None) -> dict[str, Any]:
        """Add a row from series (see `series`); `pivot=(row label, column label)` also places its median in a
        compact matrix table in the doc (e.g. shape × dtype/threads)."""
        ratio = advantage(ours["median"], peer["median"], metric.better) if peer else None
        row = {"name": name, "unit": metric.unit, "better": metric.better, "note": note, "ours": ours, "peer": peer,
               "ours_label": ours["label"], "peer_label": peer["label"] if peer else None, "ratio": ratio,
               "target": metric.target,
               "met": None if ratio is None or metric.target is None else ratio >= metric.target}
        if pivot:
            row["pivot"] = list(pivot)
        self.rows.append(row)
        if peer is None:
            self.log(f"{name}: {ours['median']:.4g} {metric.unit} (min {ours['min']:.4g}, max {ours['max']:.4g}; "
                     f"others {ours['others_cores_median']:.2f} cores)")
        return row


# ---------------------------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class BenchSpec:
    name: str
    title: str
    fn: Callable[[Bench], None]
    peers: tuple[str, ...]
    order: int
    doc: str


REGISTRY: dict[str, BenchSpec] = {}


def benchmark(name: str, *, title: str, peers: tuple[str, ...] = (), order: int = 50) -> Callable:
    """Register `fn(b: Bench) -> None` as benchmark `name` (its module docstring is its description in the doc).
    `peers` names venvs from setup_peers.sh it needs; `order` places its section in the doc (lower first)."""

    def wrap(fn: Callable[[Bench], None]) -> Callable[[Bench], None]:
        mod = inspect.getmodule(fn)
        REGISTRY[name] = BenchSpec(name, title, fn, tuple(peers), order, inspect.cleandoc(mod.__doc__ or ""))
        return fn

    return wrap


# ---------------------------------------------------------------------------------------------------------------
# environment and results


def _version_of(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"], capture_output=True,
                               text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def environment() -> dict[str, Any]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
        "alignpipe": _version_of("alignpipe"), "git": _git_sha(),
        "torch": _version_of("torch"), "transformers": _version_of("transformers"), "peft": _version_of("peft"),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
    }


def save(spec: BenchSpec, b: Bench, started: float, env_extra: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    data = {
        "schema_version": SCHEMA_VERSION, "benchmark": spec.name, "title": spec.title, "doc": spec.doc,
        "order": spec.order, "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "duration_s": round(time.time() - started, 1), "env": {**environment(), **env_extra},
        "method": {"min_repeats": b.repeats, "wait_quiet_s": b.wait_quiet_s, "busy_cores": BUSY_CORES,
                   "min_resolved_s": MIN_RESOLVED_S},
        "config": b.cfg, "notes": b.notes, "extra": b.extra, "rows": b.rows,
    }
    path = RESULTS / f"{spec.name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return path


def load_results() -> list[dict[str, Any]]:
    out = []
    for p in sorted(RESULTS.glob("*.json")):
        data = json.loads(p.read_text())
        if data.get("schema_version") == SCHEMA_VERSION:
            out.append(data)
    return sorted(out, key=lambda d: (d.get("order", 50), d["benchmark"]))


def load_result(name: str) -> dict[str, Any] | None:
    """A saved result by benchmark name (later phases read e.g. the measured peak from 'limit')."""
    p = RESULTS / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


# ---------------------------------------------------------------------------------------------------------------
# helpers for sample functions


def sh(cmd: Sequence[str], *, cwd: str | os.PathLike | None = None, env: dict[str, str] | None = None,
       check: bool = True) -> subprocess.CompletedProcess:
    """Run a command to completion (its CPU counts as ours), output captured; raise with its tail on failure."""
    p = subprocess.run(list(map(str, cmd)), cwd=cwd, env=env, capture_output=True, text=True)
    if check and p.returncode != 0:
        tail = "\n".join((p.stdout + p.stderr).splitlines()[-30:])
        raise RuntimeError(f"command failed ({p.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    return p


def run_json(cmd: Sequence[str], **kw: Any) -> dict[str, Any]:
    """Run a worker (e.g. a peer's script in its venv) that prints one JSON object as its last stdout line."""
    p = sh(cmd, **kw)
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    return json.loads(lines[-1])
