"""The journal: SQLite in the workspace, recording what ran (the spec says what should run).

Tables: runs, attempts (one row per stage per try, and one per cache hit), metrics (series logged by stages),
plans (the stages a run set out to run, in order: what `alignpipe watch` shows as pending), external (hash cache
of external inputs keyed by path, size and mtime), platform_runs (which workflow platform and platform run
started a run: `alignpipe stage exec`). During a run only the runner writes; a workspace lock (flock on
.alignpipe/run.lock) keeps a second run out. Platform tasks share that lock with each other (each runs one stage;
the stage's work-dir lock keeps two attempts of one stage apart), never with a run or gc.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignpipe.pipeline.errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, pipeline TEXT, source TEXT, started REAL, ended REAL, status TEXT,
  pid INTEGER, host TEXT, argv TEXT
);
CREATE TABLE IF NOT EXISTS attempts (
  run_id TEXT, stage TEXT, attempt INTEGER, status TEXT, started REAL, ended REAL, exit_code INTEGER,
  error TEXT, cache_hit INTEGER, fingerprint TEXT, outputs TEXT, host TEXT, log TEXT,
  PRIMARY KEY (run_id, stage, attempt)
);
CREATE TABLE IF NOT EXISTS metrics (
  run_id TEXT, stage TEXT, fingerprint TEXT, step INTEGER, name TEXT, value REAL, t REAL
);
CREATE INDEX IF NOT EXISTS metrics_by_stage ON metrics (fingerprint, name, step);
CREATE TABLE IF NOT EXISTS plans (
  run_id TEXT PRIMARY KEY, stages TEXT
);
CREATE TABLE IF NOT EXISTS external (
  path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, id TEXT
);
CREATE TABLE IF NOT EXISTS platform_runs (
  run_id TEXT PRIMARY KEY, platform TEXT, platform_run_id TEXT
);
"""


@dataclass
class Attempt:
    run_id: str
    stage: str
    attempt: int
    status: str
    started: float | None
    ended: float | None
    exit_code: int | None
    error: str | None
    cache_hit: bool
    fingerprint: str | None
    outputs: dict[str, str]
    host: str | None
    log: str | None


class DamagedJournal(UserError):
    pass


class Journal:
    """`new_if_damaged`: a journal SQLite cannot read is moved aside (journal.db.damaged-<time>) and a new one
    started, with a warning through `report`; otherwise a damaged journal is a DamagedJournal error saying so."""

    def __init__(self, workspace: str | os.PathLike, readonly: bool = False, new_if_damaged: bool = False,
                 report: Any = None):
        self.dir = Path(workspace) / ".alignpipe"
        self.path = self.dir / "journal.db"
        if readonly and not self.path.exists():
            raise UserError(f"{workspace}: no alignpipe workspace here (no .alignpipe/journal.db); run a pipeline "
                            "first or pass --workspace")
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._open(readonly)
        except sqlite3.DatabaseError as e:
            if not new_if_damaged:
                raise DamagedJournal(f"{self.path}: the journal is damaged ({e}). Artifacts and the cache are "
                                     "intact. Recover: `alignpipe run --new-journal` moves it aside and starts a "
                                     "new one (run history and metrics are lost; finished stages stay cached), or "
                                     f"move it aside yourself: mv {self.path} {self.path}.damaged") from None
            self.db.close()
            aside = self.path.with_name(f"journal.db.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            for suffix in ("", "-wal", "-shm"):
                if Path(str(self.path) + suffix).exists():
                    os.replace(str(self.path) + suffix, str(aside) + suffix)
            if report is not None:
                report({"event": "warning", "stage": None, "message": f"{self.path} was damaged ({e}); moved to "
                        f"{aside}, started a new journal"})
            self._open(readonly)

    def _open(self, readonly: bool) -> None:
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA busy_timeout=30000")
        if not readonly:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        row = self.db.execute("PRAGMA quick_check").fetchone()  # a damaged page anywhere fails here, not mid-run
        if row[0] != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {row[0]}")

    def close(self) -> None:
        self.db.close()

    # -- runs --------------------------------------------------------------------------------------------------
    def start_run(self, pipeline: str, source: str, argv: list[str], platform: str | None = None,
                  platform_run_id: str | None = None) -> str:
        """A new run. An exclusive run marks every still-'running' run abandoned (it holds the workspace alone, so
        they are dead); a platform task's run (`platform` set) shares the workspace with live ones and does not."""
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        if platform is None:
            self.db.execute("UPDATE runs SET status='abandoned', ended=? WHERE status='running'", (time.time(),))
        self.db.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?)",
                        (run_id, pipeline, source, time.time(), None, "running", os.getpid(), socket.gethostname(),
                         json.dumps(argv)))
        if platform is not None:
            self.db.execute("INSERT INTO platform_runs VALUES (?,?,?)", (run_id, platform, platform_run_id))
        return run_id

    def end_run(self, run_id: str, status: str) -> None:
        self.db.execute("UPDATE runs SET status=?, ended=? WHERE id=?", (status, time.time(), run_id))

    def runs(self, limit: int = 50) -> list[dict[str, Any]]:
        cur = self.db.execute("SELECT id, pipeline, source, started, ended, status FROM runs "
                              "ORDER BY started DESC LIMIT ?", (limit,))
        rows = [dict(zip(("id", "pipeline", "source", "started", "ended", "status"), r, strict=True)) for r in cur]
        platforms = self.platform_runs()
        for r in rows:
            r["platform"], r["platform_run_id"] = platforms.get(r["id"], (None, None))
        return rows

    def platform_runs(self) -> dict[str, tuple[str, str | None]]:
        """run id -> (platform, platform run id) of the runs a workflow platform's task started."""
        try:
            rows = self.db.execute("SELECT run_id, platform, platform_run_id FROM platform_runs").fetchall()
        except sqlite3.OperationalError:  # a journal from before the table, opened read-only (not migrated)
            return {}
        return {r[0]: (r[1], r[2]) for r in rows}

    def run_info(self, run_id: str) -> dict[str, Any] | None:
        """One run's row: id, pipeline, source, started, ended, status, pid, host, argv (a list)."""
        row = self.db.execute("SELECT id, pipeline, source, started, ended, status, pid, host, argv FROM runs "
                              "WHERE id=?", (run_id,)).fetchone()
        if row is None:
            return None
        info = dict(zip(("id", "pipeline", "source", "started", "ended", "status", "pid", "host", "argv"), row,
                        strict=True))
        return {**info, "argv": json.loads(info["argv"] or "[]")}

    def latest_run(self) -> str | None:
        row = self.db.execute("SELECT id FROM runs ORDER BY started DESC LIMIT 1").fetchone()
        return row[0] if row else None

    def resolve_run(self, ref: str | None) -> str:
        if ref is None:
            run = self.latest_run()
            if run is None:
                raise UserError(f"{self.dir.parent}: no runs recorded yet; run `alignpipe run` first")
            return run
        rows = self.db.execute("SELECT id FROM runs WHERE id LIKE ?", (ref + "%",)).fetchall()
        if len(rows) != 1:
            raise UserError(f"{'no' if not rows else 'more than one'} run matches {ref!r}; see `alignpipe runs`")
        return rows[0][0]

    def record_plan(self, run_id: str, stages: list[str]) -> None:
        self.db.execute("INSERT OR REPLACE INTO plans VALUES (?,?)", (run_id, json.dumps(stages)))

    def plan(self, run_id: str) -> list[str] | None:
        """The stages run `run_id` planned, in order (None for runs recorded before plans were)."""
        try:
            row = self.db.execute("SELECT stages FROM plans WHERE run_id=?", (run_id,)).fetchone()
        except sqlite3.OperationalError:  # a journal written before the plans table existed, opened read-only
            return None
        return json.loads(row[0]) if row else None

    # -- attempts ----------------------------------------------------------------------------------------------
    def record_attempt(self, a: Attempt) -> None:
        self.db.execute("INSERT OR REPLACE INTO attempts VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (a.run_id, a.stage, a.attempt, a.status, a.started, a.ended, a.exit_code, a.error,
                         int(a.cache_hit), a.fingerprint, json.dumps(a.outputs), a.host, a.log))

    def attempts(self, run_id: str, stage: str | None = None) -> list[Attempt]:
        q, args = "SELECT * FROM attempts WHERE run_id=?", [run_id]
        if stage:
            q, args = q + " AND stage=?", [*args, stage]
        rows = self.db.execute(q + " ORDER BY started, attempt", args).fetchall()
        return [Attempt(*r[:8], bool(r[8]), r[9], json.loads(r[10] or "{}"), r[11], r[12]) for r in rows]

    def last_attempt(self, stage: str, executed: bool = False) -> Attempt | None:
        """The newest attempt of a stage; `executed` skips cache hits (they have no log)."""
        row = self.db.execute("SELECT run_id, attempt FROM attempts WHERE stage=? AND (? = 0 OR cache_hit = 0) "
                              "ORDER BY started DESC, attempt DESC LIMIT 1", (stage, int(executed))).fetchone()
        if not row:
            return None
        return next(a for a in self.attempts(row[0], stage) if a.attempt == row[1])

    def referenced_artifacts(self) -> set[str]:
        """Outputs of the latest run of every pipeline (what gc keeps besides tags)."""
        runs = [r[0] for r in self.db.execute("SELECT id FROM runs r WHERE started = (SELECT MAX(started) FROM "
                                              "runs WHERE pipeline = r.pipeline)")]
        ids: set[str] = set()
        for run in runs:
            for a in self.attempts(run):
                ids |= set(a.outputs.values())
        return ids

    # -- metrics -----------------------------------------------------------------------------------------------
    def add_metrics(self, run_id: str, stage: str, fp: str, step: int, values: dict[str, float], t: float) -> None:
        self.db.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?,?)",
                            [(run_id, stage, fp, step, k, v, t) for k, v in values.items()])

    def metrics(self, fp: str) -> dict[str, list[tuple[int, float]]]:
        out: dict[str, list[tuple[int, float]]] = {}
        for name, step, value in self.db.execute(
                "SELECT name, step, value FROM metrics WHERE fingerprint=? ORDER BY name, step, t", (fp,)):
            out.setdefault(name, []).append((step, value))
        return out

    # -- external input hash cache -----------------------------------------------------------------------------
    def external_id(self, path: str, size: int, mtime_ns: int) -> str | None:
        row = self.db.execute("SELECT id FROM external WHERE path=? AND size=? AND mtime_ns=?",
                              (path, size, mtime_ns)).fetchone()
        return row[0] if row else None

    def remember_external(self, path: str, size: int, mtime_ns: int, art_id: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO external VALUES (?,?,?,?)", (path, size, mtime_ns, art_id))


class WorkspaceLock:
    """A flock on .alignpipe/run.lock; the OS releases it when the holder dies, even by kill -9. Exclusive for a
    run or gc; `shared` for platform tasks, which run one stage each and may run side by side."""

    def __init__(self, workspace: str | os.PathLike):
        self.path = Path(workspace) / ".alignpipe" / "run.lock"
        self.fd: int | None = None
        self.shared = False

    def acquire(self, wait: bool = False, poll: float = 0.5, shared: bool = False) -> WorkspaceLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        self.shared = shared
        while True:
            try:
                fcntl.flock(self.fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    holder = os.pread(self.fd, 200, 0).decode(errors="replace").strip() or "another process"
                    os.close(self.fd)
                    self.fd = None
                    raise UserError(f"{self.path.parent.parent}: workspace is in use by {holder}; wait for it to "
                                    "finish, pass --wait to queue behind it, or use another --workspace") from None
                time.sleep(poll)
        if not shared:  # the holder's name is only written by an exclusive holder (shared ones are many)
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"run pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        return self

    def release(self) -> None:
        if self.fd is not None:
            if not self.shared:
                os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> WorkspaceLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
