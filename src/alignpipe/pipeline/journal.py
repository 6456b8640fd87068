"""The journal: what ran (the spec says what should run). SQLite in the workspace by default (a bucket
workspace's in each machine's state); PostgreSQL when several machines share the runs (`journal:
postgresql://...`, recorded in the workspace so every machine that reaches it finds the journal). One schema on
both, versioned: MIGRATIONS are applied in order when a journal is opened for writing.

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

# Versioned migrations, applied in order on open (one transaction each); the same statements on SQLite and on
# PostgreSQL (DOUBLE PRECISION and BIGINT map to SQLite's REAL and INTEGER affinities). A journal older than the
# versions table gets them all: every statement is idempotent.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    ("""CREATE TABLE IF NOT EXISTS runs (
          id TEXT PRIMARY KEY, pipeline TEXT, source TEXT, started DOUBLE PRECISION, ended DOUBLE PRECISION,
          status TEXT, pid BIGINT, host TEXT, argv TEXT)""",
     """CREATE TABLE IF NOT EXISTS attempts (
          run_id TEXT, stage TEXT, attempt BIGINT, status TEXT, started DOUBLE PRECISION, ended DOUBLE PRECISION,
          exit_code BIGINT, error TEXT, cache_hit BIGINT, fingerprint TEXT, outputs TEXT, host TEXT, log TEXT,
          PRIMARY KEY (run_id, stage, attempt))""",
     """CREATE TABLE IF NOT EXISTS metrics (
          run_id TEXT, stage TEXT, fingerprint TEXT, step BIGINT, name TEXT, value DOUBLE PRECISION,
          t DOUBLE PRECISION)""",
     "CREATE INDEX IF NOT EXISTS metrics_by_stage ON metrics (fingerprint, name, step)",
     "CREATE TABLE IF NOT EXISTS external (path TEXT PRIMARY KEY, size BIGINT, mtime_ns BIGINT, id TEXT)"),
    ("CREATE TABLE IF NOT EXISTS plans (run_id TEXT PRIMARY KEY, stages TEXT)",),
    ("CREATE TABLE IF NOT EXISTS platform_runs (run_id TEXT PRIMARY KEY, platform TEXT, platform_run_id TEXT)",),
    ("CREATE INDEX IF NOT EXISTS attempts_by_stage ON attempts (stage, started)",),
)
ATTEMPT_COLUMNS = ("run_id", "stage", "attempt", "status", "started", "ended", "exit_code", "error", "cache_hit",
                   "fingerprint", "outputs", "host", "log")


class SQLiteDB:
    """The embedded journal: one SQLite file (WAL) in the workspace, or in a bucket workspace's local state."""

    name = "sqlite"

    def __init__(self, path: Path, readonly: bool):
        self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA busy_timeout=30000")
        if not readonly:
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        row = self.db.execute("PRAGMA quick_check").fetchone()  # a damaged page anywhere fails here, not mid-run
        if row[0] != "ok":
            raise sqlite3.DatabaseError(f"quick_check: {row[0]}")

    def execute(self, sql: str, args: tuple | list = ()) -> Any:
        return self.db.execute(sql, args)

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        self.db.executemany(sql, rows)

    def has_table(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() \
            is not None

    def transaction(self) -> Any:
        return _Transaction(self, "BEGIN IMMEDIATE")

    def close(self) -> None:
        self.db.close()


class PostgresDB:
    """A journal several machines share: `journal: postgresql://user@host:port/db` (psycopg 3). The password comes
    from the standard chain (PGPASSWORD, ~/.pgpass), never from the URL, so no secret is ever stored or shown."""

    name = "postgresql"

    def __init__(self, url: str):
        try:
            import psycopg
        except ImportError:
            raise UserError(f"journal {url}: a PostgreSQL journal needs psycopg: pip install 'alignpipe[postgres]'"
                            ) from None
        try:
            self.db = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.OperationalError as e:
            raise UserError(f"journal {url}: cannot connect ({str(e).splitlines()[0]}); check the host, the port, "
                            "the database name and PGPASSWORD / ~/.pgpass") from None

    def execute(self, sql: str, args: tuple | list = ()) -> Any:
        return self.db.execute(sql.replace("?", "%s"), tuple(args))

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        with self.db.cursor() as cur:
            cur.executemany(sql.replace("?", "%s"), rows)

    def has_table(self, name: str) -> bool:
        return self.execute("SELECT to_regclass(?)", (name,)).fetchone()[0] is not None

    def transaction(self) -> Any:
        return _Transaction(self, "BEGIN")

    def close(self) -> None:
        self.db.close()


class _Transaction:
    def __init__(self, db: Any, begin: str):
        self.db, self.begin = db, begin

    def __enter__(self) -> None:
        self.db.execute(self.begin)

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")


def check_journal_url(url: str) -> str:
    """A journal URL alignpipe can use, without a password in it (it would land in manifests, logs, the workspace)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise UserError(f"journal {url!r}: expected postgresql://USER@HOST:PORT/DATABASE (or leave it out for the "
                        "embedded SQLite journal)")
    if parts.password:
        raise UserError("journal URL holds a password: put it in PGPASSWORD or ~/.pgpass and give "
                        f"postgresql://{parts.username}@{parts.hostname}{f':{parts.port}' if parts.port else ''}"
                        f"{parts.path} instead")
    return url


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
    """What ran, in SQLite (the workspace's .alignpipe/journal.db; a bucket workspace's in this machine's state) or
    in PostgreSQL (`url`, else $ALIGNPIPE_JOURNAL, else the URL the workspace recorded when a run first used one).

    `new_if_damaged`: a SQLite journal that cannot be read is moved aside (journal.db.damaged-<time>) and a new one
    started, with a warning through `report`; otherwise a damaged journal is a DamagedJournal error saying so."""

    def __init__(self, workspace: str | os.PathLike, readonly: bool = False, new_if_damaged: bool = False,
                 report: Any = None, url: str | None = None):
        from alignpipe.pipeline.cache import local_state

        self.dir = local_state(workspace) / ".alignpipe"  # a bucket's journal: this machine's state dir
        self.path = self.dir / "journal.db"
        self.url = url or os.environ.get("ALIGNPIPE_JOURNAL") or recorded_journal_url(workspace)
        self.where = self.url or str(self.path)
        if self.url:
            self.db = PostgresDB(check_journal_url(self.url))
            self._migrate(readonly)
            return
        if readonly and not self.path.exists():
            if "://" in str(workspace):  # a bucket's embedded journal is kept by the machine that ran it
                raise UserError(f"{workspace}: this machine has no journal of this workspace: its SQLite journal "
                                "stays on the machine that ran the pipeline. Run it here, or share one journal "
                                "between machines: `journal: postgresql://USER@HOST/DB` in the spec")
            if (Path(workspace) / "artifacts").is_dir():
                raise UserError(f"{workspace}: artifacts but no run history here (no .alignpipe/journal.db): "
                                "artifacts pulled or copied here come without one; run a pipeline here to start it")
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
            if getattr(self, "db", None) is not None:
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
        self.db = None
        self.db = SQLiteDB(self.path, readonly)
        self._migrate(readonly)

    def _migrate(self, readonly: bool) -> None:
        """Apply the migrations this journal lacks (none when opened read-only: it is read as it is)."""
        done = self._version()
        if readonly or done >= len(MIGRATIONS):
            self.version = done
            return
        self.db.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT)")
        with self.db.transaction():
            done = self._version()  # again, inside the transaction: another machine may have migrated meanwhile
            for statement in (st for step in MIGRATIONS[done:] for st in step):
                self.db.execute(statement)
            self.db.execute("DELETE FROM schema_version")
            self.db.execute("INSERT INTO schema_version VALUES (?)", (len(MIGRATIONS),))
        self.version = len(MIGRATIONS)

    def _version(self) -> int:
        if self.db.has_table("schema_version"):
            row = self.db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            return int(row[0] or 0)
        # a journal from before versions: runs..external (1), plans (2), platform_runs (3) by the tables it has
        return sum(1 for tables in (("runs",), ("plans",), ("platform_runs",)) if self.db.has_table(tables[0]))

    def close(self) -> None:
        self.db.close()

    # -- runs --------------------------------------------------------------------------------------------------
    def start_run(self, pipeline: str, source: str, argv: list[str], platform: str | None = None,
                  platform_run_id: str | None = None) -> str:
        """A new run. An exclusive run marks every still-'running' run abandoned (it holds the workspace alone, so
        they are dead); a platform task's run (`platform` set) shares the workspace with live ones and does not."""
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        if platform is None:
            self.db.execute("UPDATE runs SET status='abandoned', ended=? WHERE status=?", (time.time(), "running"))
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
        if self.version < 3:  # a journal from before the table, opened read-only (not migrated)
            return {}
        rows = self.db.execute("SELECT run_id, platform, platform_run_id FROM platform_runs").fetchall()
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
        self.db.execute("INSERT INTO plans VALUES (?,?) ON CONFLICT (run_id) DO UPDATE SET stages = excluded.stages",
                        (run_id, json.dumps(stages)))

    def plan(self, run_id: str) -> list[str] | None:
        """The stages run `run_id` planned, in order (None for runs recorded before plans were)."""
        if self.version < 2:  # a journal written before the plans table existed, opened read-only
            return None
        row = self.db.execute("SELECT stages FROM plans WHERE run_id=?", (run_id,)).fetchone()
        return json.loads(row[0]) if row else None

    # -- attempts ----------------------------------------------------------------------------------------------
    def record_attempt(self, a: Attempt) -> None:
        update = ", ".join(f"{c} = excluded.{c}" for c in ATTEMPT_COLUMNS[3:])
        self.db.execute(f"INSERT INTO attempts VALUES ({','.join('?' * len(ATTEMPT_COLUMNS))}) "
                        f"ON CONFLICT (run_id, stage, attempt) DO UPDATE SET {update}",
                        (a.run_id, a.stage, a.attempt, a.status, a.started, a.ended, a.exit_code, a.error,
                         int(a.cache_hit), a.fingerprint, json.dumps(a.outputs), a.host, a.log))

    def attempts(self, run_id: str, stage: str | None = None) -> list[Attempt]:
        q, args = f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM attempts WHERE run_id=?", [run_id]
        if stage:
            q, args = q + " AND stage=?", [*args, stage]
        rows = self.db.execute(q + " ORDER BY started, attempt", args).fetchall()
        return [Attempt(*r[:8], bool(r[8]), r[9], json.loads(r[10] or "{}"), r[11], r[12]) for r in rows]

    def last_attempt(self, stage: str, executed: bool = False) -> Attempt | None:
        """The newest attempt of a stage; `executed` skips cache hits (they have no log)."""
        row = self.db.execute("SELECT run_id, attempt FROM attempts WHERE stage=? AND cache_hit <= ? "
                              "ORDER BY started DESC, attempt DESC LIMIT 1", (stage, 0 if executed else 1)).fetchone()
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
        self.db.execute("INSERT INTO external VALUES (?,?,?,?) ON CONFLICT (path) DO UPDATE SET size = excluded.size, "
                        "mtime_ns = excluded.mtime_ns, id = excluded.id", (path, size, mtime_ns, art_id))


JOURNAL_FILE = "journal.json"  # in a local workspace's .alignpipe/: the URL of a PostgreSQL journal it uses


def recorded_journal_url(workspace: str | os.PathLike) -> str | None:
    """The PostgreSQL journal a workspace recorded when a run first used one (every machine finds it there)."""
    from alignpipe.pipeline.fs import open_fs
    from alignpipe.pipeline.store import workspace_marker

    text = str(workspace)
    try:
        if "://" in text and not text.startswith("file://"):
            data = workspace_marker(open_fs(text))
        else:
            data = json.loads((Path(text.removeprefix("file://")) / ".alignpipe" / JOURNAL_FILE).read_bytes())
    except (FileNotFoundError, NotADirectoryError, ValueError, UserError):
        return None
    return data.get("journal") if isinstance(data, dict) else None


def record_journal_url(store: Any, url: str) -> None:
    """Remember the workspace's PostgreSQL journal in the workspace itself (refusing to switch journals)."""
    from alignpipe.pipeline.store import SCHEMA_VERSION, write_workspace_marker

    known = recorded_journal_url(store.root)
    if known == url:
        return
    if known is not None:
        raise UserError(f"workspace {store.root} records its journal at {known}; give that journal (or none), "
                        f"not {url}")
    body = json.dumps({"alignpipe_workspace": SCHEMA_VERSION, "journal": url}).encode()
    if store.remote:
        write_workspace_marker(store.fs, json.loads(body))
    else:
        (store.root / ".alignpipe").mkdir(parents=True, exist_ok=True)
        (store.root / ".alignpipe" / JOURNAL_FILE).write_bytes(body)


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
        self.name_run(None)
        return self

    def name_run(self, run_id: str | None) -> None:
        """Write who holds the lock, for other runs' refusals; only an exclusive holder (shared ones are many)."""
        from alignpipe.pipeline.lease import holder_text

        if self.fd is not None and not self.shared:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, holder_text(run_id).encode(), 0)

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
