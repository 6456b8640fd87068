"""Reading what a platform run did, from the workspace's journal (the record every task writes into)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _rows(ws: Path, query: str) -> list[tuple]:
    db = sqlite3.connect(Path(ws) / ".alignpipe" / "journal.db")
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def executed(ws: Path, platform: str | None = None) -> list[str]:
    """Stages that executed (not cache hits), in order, under `platform` (None: any run)."""
    rows = _rows(ws, "SELECT a.stage, p.platform FROM attempts a LEFT JOIN platform_runs p ON p.run_id = a.run_id "
                     "WHERE a.cache_hit = 0 AND a.status = 'done' ORDER BY a.ended")
    return [stage for stage, plat in rows if platform is None or plat == platform]


def attempts(ws: Path, stage: str) -> list[tuple[str, str | None]]:
    """(status, platform run id) of a stage's executed attempts, oldest first."""
    return _rows(ws, "SELECT a.status, p.platform_run_id FROM attempts a JOIN platform_runs p ON p.run_id = a.run_id "
                     f"WHERE a.stage = '{stage}' AND a.cache_hit = 0 AND a.status != 'running' ORDER BY a.started")


def attempt_count(ws: Path) -> int:
    return _rows(ws, "SELECT COUNT(*) FROM attempts")[0][0]


def final_ids(ws: Path) -> dict[str, dict[str, str]]:
    """stage -> its outputs (name -> artifact id) in the newest attempt that has outputs."""
    out: dict[str, dict[str, str]] = {}
    for stage, outputs in _rows(ws, "SELECT stage, outputs FROM attempts WHERE outputs != '{}' ORDER BY ended"):
        out[stage] = json.loads(outputs)
    return out


def platform_runs(ws: Path) -> dict[str, tuple[str, str | None]]:
    return {r[0]: (r[1], r[2]) for r in _rows(ws, "SELECT run_id, platform, platform_run_id FROM platform_runs")}


def assert_all_cached_under_alignpipe_run(alignpipe_exe: str, spec: Path, ws: Path, **env: str) -> None:
    """`alignpipe run` on a workspace a platform filled executes nothing: every stage is a cache hit."""
    p = subprocess.run([alignpipe_exe, "run", str(spec), "-w", str(ws), "--json"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, **env})
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout.splitlines()[-1])
    assert {s["state"] for s in result["stages"].values()} == {"cached"}, result


def side_env(name: str) -> Path:
    """The bin directory of the platform's side env, created (or reused) by scripts/setup_env.sh."""
    p = subprocess.run(["bash", str(REPO / "scripts" / "setup_env.sh"), name], capture_output=True, text=True,
                       timeout=1200)
    assert p.returncode == 0, p.stderr
    return Path(p.stdout.strip().splitlines()[-1])


def airflow_env(home: Path, dags: Path) -> dict[str, str]:
    return {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/db.sqlite"}


def run_airflow(airflow_python: Path, airflow_home: Path, dags: Path, *extra: str, timeout: int = 600):
    """DagBag of `dags` (and with "--test", one dag.test()) in the Airflow env: (dagbag facts, run state)."""
    driver = Path(__file__).with_name("airflow_driver.py")
    p = subprocess.run([str(airflow_python), str(driver), str(dags), *extra], env=airflow_env(airflow_home, dags),
                       capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    return lines[0], (lines[1] if len(lines) > 1 else None)
