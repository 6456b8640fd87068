"""Workflow platforms (issue 12): what running the exported graph on each platform costs around the stages.

- **Per-stage overhead of each platform's local run** against `alignpipe run` on the torch-free example pipeline
  (corpus -> words, chars -> report; 4 stages, ~1 s of stage work): each sample is one cold run of the whole
  graph on a fresh workspace, timed as the platform's own command (`python pipeline.py --local` with kfp.local,
  `python DAG.py` = dag.test() on a migrated sqlite AIRFLOW_HOME, `python flow.py` for Prefect with its temporary
  server, `python flow.py run` for Metaflow, `dvc repro`), interleaved with `alignpipe run`. Each platform task runs
  `alignpipe stage exec`: a process start, the CLI import and a cache check of the upstream stages on top of the
  stage itself. Per-stage overhead = (platform − alignpipe run) / 4.
- **No-op rerun under DVC**: `dvc repro` on the exported dvc.yaml of the orchestration benchmark's 7-stage
  RLHF-shaped pipeline (everything up to date) against the hand-written dvc.yaml of the same shape that the
  orchestration benchmark compares alignpipe with (benchmarks/orchestration.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from alignpipe import api
from benchmarks import _fixtures as fx
from benchmarks import orchestration
from benchmarks.harness import REPO, Bench, Metric, Sample, benchmark, sh

SECONDS = Metric("s", "lower")
EXAMPLE = api.builtin_path("example")
STAGES = 4
PLATFORMS = ("kfp", "airflow", "prefect", "metaflow", "dvc")
LABELS = {"kfp": "KFP (kfp.local)", "airflow": "Airflow (dag.test())", "prefect": "Prefect (local server)",
          "metaflow": "Metaflow (local)", "dvc": "DVC (dvc repro)"}


def side_env(name: str) -> Path:
    """The platform's venv bin dir (scripts/setup_env.sh builds it once, from constraints/NAME.txt)."""
    out = sh(["bash", str(REPO / "scripts" / "setup_env.sh"), name]).stdout
    return Path(out.strip().splitlines()[-1])


class Platform:
    """One platform's cold run of the example graph; `once()` sets up a fresh workspace (untimed) and returns the
    seconds of the platform's own command."""

    def __init__(self, name: str, root: Path, env: dict[str, str]):
        self.name, self.root, self.env, self.n = name, root, env, 0
        self.bin = side_env(name) if name != "alignpipe" else None
        if name == "airflow":
            self.env = {**env, "AIRFLOW_HOME": str(root / "airflow-home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{root}/airflow.db"}
            sh([str(self.bin / "airflow"), "db", "migrate"], env=self.env)

    def _cmd(self, d: Path) -> list[str]:
        py = str(self.bin / "python") if self.bin else ""
        return {"kfp": [py, "pipeline.py", "--local"], "airflow": [py, "example_dag.py"], "prefect": [py, "flow.py"],
                "metaflow": [py, "flow.py", "run"], "dvc": [str(self.bin / "dvc"), "repro", "-q"]}[self.name]

    def once(self) -> float:
        self.n += 1
        run = self.root / f"run-{self.n}"
        ws, d = run / "ws", run / "export"
        if self.name == "alignpipe":
            cmd, cwd, env = [*fx.alignpipe_exe(), "run", str(EXAMPLE), "-w", str(ws), "-q"], run, self.env
            run.mkdir(parents=True)
        else:
            api.export(self.name, EXAMPLE, d, alignpipe=fx.alignpipe_exe()[0], workspace=ws)
            cmd, cwd, env = self._cmd(d), d, {**self.env, "AIRFLOW__CORE__DAGS_FOLDER": str(d)}
            if self.name == "dvc":
                sh([str(self.bin / "dvc"), "init", "--no-scm", "-q"], cwd=d, env=env)
        t0 = time.perf_counter()
        sh(cmd, cwd=cwd, env=env)
        dt = time.perf_counter() - t0
        shutil.rmtree(run, ignore_errors=True)
        return dt


def _overhead(ours: list[Sample], peer: list[Sample]) -> list[Sample]:
    """Per paired round: (platform − alignpipe run) / stages, keeping the round's load accounting."""
    return [Sample((p.value - o.value) / STAGES, p.wall_s, max(o.others_cores, p.others_cores), p.own_cpu_s,
                   p.loadavg, o.busy or p.busy, o.used and p.used, p.steal_cores)
            for o, p in zip(ours, peer, strict=True)]


def _cold_runs(b: Bench, env: dict[str, str]) -> None:
    runners = [Platform(n, b.workdir / n, env) for n in ("alignpipe", *PLATFORMS)]
    cols = b.interleave([r.once for r in runners], repeats=3, max_redo=2)
    ours = cols[0]
    b.add_row("cold run, example pipeline (4 stages): alignpipe run", SECONDS, b.series("alignpipe run", ours),
              note="`alignpipe run example.yaml -w WS -q` on a fresh workspace")
    for name, peer in zip(PLATFORMS, cols[1:], strict=True):
        b.add_row(f"cold run, example pipeline: alignpipe run vs {LABELS[name]}", SECONDS,
                  b.series("alignpipe run", ours), b.series(LABELS[name], peer))
        b.add_row(f"↳ per-stage overhead of {LABELS[name]} over alignpipe run", SECONDS,
                  b.series(LABELS[name], _overhead(ours, peer)), note="(platform − alignpipe run) / 4 stages")


def _dvc_noop(b: Bench, env: dict[str, str]) -> None:
    dvc = side_env("dvc") / "dvc"
    _, ws = orchestration.build_alignpipe(b.workdir / "shape")
    exported = b.workdir / "exported"
    api.export("dvc", b.workdir / "shape" / "pipeline.yaml", exported, alignpipe=fx.alignpipe_exe()[0], workspace=ws)
    pyenv = {**env, "PYTHONPATH": str(b.workdir / "shape")}  # the stages' module, next to the spec
    sh([str(dvc), "init", "--no-scm", "-q"], cwd=exported, env=pyenv)
    sh([str(dvc), "repro", "-q"], cwd=exported, env=pyenv)
    hand = b.workdir / "hand"
    sh(orchestration.build_dvc(hand, str(dvc)), cwd=hand, env=env)  # the same DVC for both files
    assert "up to date" in sh([str(dvc), "repro"], cwd=exported, env=pyenv).stdout.lower()
    b.compare("no-op `dvc repro`, 7 stages: exported dvc.yaml vs hand-written", SECONDS,
              ours=lambda: sh([str(dvc), "repro", "-q"], cwd=exported, env=pyenv) and None,
              peer=("hand-written dvc.yaml", lambda: sh([str(dvc), "repro", "-q"], cwd=hand, env=env) and None),
              repeats=7, note="both up to date: DVC hashes deps, params and outs and runs nothing; the exported "
                              "file also tracks each stage's params (params.yaml)")


@benchmark("platforms", title="Workflow platforms: local runs of the exported graph, DVC no-op", order=60)
def run(b: Bench) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "DVC_NO_UPDATER": "1", "USER": os.environ.get("USER", "bench"),
           "PREFECT_HOME": str(b.workdir / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_LOGGING_LEVEL": "WARNING", "OMP_WAIT_POLICY": "PASSIVE"}
    b.config(pipeline="example (corpus -> words, chars -> report)", stages=STAGES, python=sys.version.split()[0],
             versions={n: _version(n) for n in PLATFORMS})
    _dvc_noop(b, env)
    _cold_runs(b, env)
    b.note("The machine is shared with other engineers' test runs while this runs: see the load columns. Each "
           "platform runs from its own venv (.venvs/NAME) and calls the main venv's `alignpipe` by absolute path.")


def _version(name: str) -> str | None:
    dist = {"airflow": "apache-airflow"}.get(name, name)
    py = side_env(name) / "python"
    p = subprocess.run([str(py), "-c", f"from importlib.metadata import version; print(version({dist!r}))"],
                       capture_output=True, text=True)
    return p.stdout.strip() or None
