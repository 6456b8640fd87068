"""Judgments in SQLite, in the label stage's work dir: the labeling page's durable store and its checkpoint.

Every change is one transaction committed (WAL, synchronous=FULL) before the caller returns, and the page
acknowledges a judgment only after that, so a kill at any instant loses no acknowledged judgment. A pair is judged
at most once per annotator (UNIQUE(pair, annotator)): a retried submission is recognized and answered as a
duplicate, never stored twice. At most `overlap` votes (non-skip judgments) are stored per pair.

Tables:
- pairs: the pairs put up for labeling (key, prompt, a, b) and their vote count (kept in the same transaction as
  the judgments it counts, so it is never out of step);
- judgments: who (annotator), which pair, the choice in the pair's own terms (a, b, tie, skip), the order the
  page showed (`shown`: "ab" = a on the left), reason, when, dwell time (seconds from the page serving the pair
  to the submission), and where it came from (page, or an import);
- annotators (token hashes only, never tokens), login_links (one-time admin links), sessions (browser cookies,
  each with its CSRF token);
- leases: the pair each annotator has open, so k annotators are not all handed the same pair at once;
- meta: settings (overlap, guidelines, seed, lease time), the page's address, counters (pairs, votes, complete
  pairs: kept in the same transactions as what they count, so progress is O(1)), and `finished` once labeling is
  over (after that, judgments are frozen and the stage's output is a function of this file).

One writing connection per process, serialized by a lock (reads have their own connection): the page's
handlers run in threads, and SQLite's own busy waiting (sleeps of up to 100 ms) would be slower than queueing on
a lock for sub-millisecond transactions.
Submissions are group-committed: the fsync of a commit costs milliseconds, so judgments that arrive while one
commit is in progress are stored together in the next transaction (each in its own savepoint, so one refused
judgment does not undo another) and each is acknowledged after the commit that holds it.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pairs (
  key TEXT PRIMARY KEY, idx INTEGER NOT NULL, prompt TEXT NOT NULL, a TEXT NOT NULL, b TEXT NOT NULL,
  votes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS pairs_by_need ON pairs (votes DESC, idx);
CREATE TABLE IF NOT EXISTS judgments (
  id INTEGER PRIMARY KEY AUTOINCREMENT, pair TEXT NOT NULL REFERENCES pairs (key), annotator TEXT NOT NULL,
  choice TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'skip')), shown TEXT NOT NULL CHECK (shown IN ('ab', 'ba')),
  reason TEXT, created REAL NOT NULL, dwell REAL, source TEXT NOT NULL,
  UNIQUE (pair, annotator)
);
CREATE INDEX IF NOT EXISTS judgments_by_annotator ON judgments (annotator, id);
CREATE TABLE IF NOT EXISTS annotators (
  name TEXT PRIMARY KEY, token_hash TEXT UNIQUE, admin INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS login_links (
  token_hash TEXT PRIMARY KEY, annotator TEXT NOT NULL, admin INTEGER NOT NULL, expires REAL NOT NULL, used REAL
);
CREATE TABLE IF NOT EXISTS sessions (
  id_hash TEXT PRIMARY KEY, annotator TEXT NOT NULL, admin INTEGER NOT NULL, csrf TEXT NOT NULL, expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
  annotator TEXT PRIMARY KEY, pair TEXT NOT NULL, served REAL NOT NULL, expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_by_pair ON leases (pair, expires);
"""

CHOICES = ("a", "b", "tie", "skip")
COUNTERS = ("n_pairs", "n_votes", "n_complete")
POSITIONS = ("left", "right", "tie", "skip")  # what the page sends: the side the annotator saw
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")
SESSION_S = 14 * 24 * 3600
ADMIN_LINK_S = 24 * 3600


class Conflict(Exception):
    """The request is well-formed but not allowed in the current state (HTTP 409)."""


class UnknownPair(KeyError):
    pass


@dataclass(frozen=True)
class Identity:
    name: str
    admin: bool
    csrf: str | None = None  # set for browser sessions (cookie auth); bearer tokens need none


@dataclass
class _Job:
    fn: Callable[[sqlite3.Connection], Any]
    done: bool = False
    result: Any = None
    error: Exception | None = None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def display_order(seed: int, pair: str, annotator: str) -> str:
    """"ab" or "ba": which response an annotator sees on the left, fixed per (seed, pair, annotator)."""
    h = hashlib.sha256(f"{seed}:{pair}:{annotator}".encode()).digest()
    return "ab" if h[0] < 128 else "ba"


def choice_from_position(position: str, shown: str) -> str:
    """The page's "left"/"right" back to the pair's own "a"/"b" through the order it showed."""
    if position == "left":
        return shown[0]
    if position == "right":
        return shown[1]
    return position


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise ValueError(f"annotator name {name!r}: use 1-64 letters, digits and . _ @ : - (starting with a letter "
                         "or digit)")
    return name


class LabelDB:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()
        self.leader = threading.Lock()  # held by the thread committing the current group of submissions
        self.queue: list[_Job] = []
        self.queue_lock = threading.Lock()
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")  # a commit is on disk before the page acknowledges it
        self.conn.execute("PRAGMA foreign_keys=ON")
        # reads go through their own connection: in WAL mode they see the last commit without waiting for the
        # writer's fsync (an auth lookup must not queue behind a group commit)
        self.reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self.reader.row_factory = sqlite3.Row
        self.read_lock = threading.RLock()
        with self._tx() as c:
            for statement in filter(str.strip, SCHEMA.split(";")):  # executescript would commit our transaction
                c.execute(statement)
            c.execute("INSERT OR IGNORE INTO meta VALUES ('db_id', ?)", (json.dumps(secrets.token_hex(8)),))
            c.executemany("INSERT OR IGNORE INTO meta VALUES (?, '0')", [(k,) for k in COUNTERS])

    def close(self) -> None:
        with self.lock, self.read_lock:
            self.conn.close()
            self.reader.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def _grouped(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """fn(conn) in a write transaction shared with the submissions queued meanwhile (group commit); returns
        after the commit that holds it, raising what fn raised (its savepoint rolled back, the others kept)."""
        job = _Job(fn)
        with self.queue_lock:
            self.queue.append(job)
        with self.leader:
            if not job.done:  # nobody committed it yet: commit everything queued, this one included
                with self.queue_lock:
                    batch, self.queue = self.queue, []
                self._commit_group(batch)
        if job.error is not None:
            raise job.error
        return job.result

    def _commit_group(self, batch: list[_Job]) -> None:
        with self.lock:
            c = self.conn
            c.execute("BEGIN IMMEDIATE")
            for job in batch:
                c.execute("SAVEPOINT submission")
                try:
                    job.result = job.fn(c)
                except Exception as e:  # handed to its own caller
                    job.error = e
                    c.execute("ROLLBACK TO submission")
                c.execute("RELEASE submission")
            try:
                c.execute("COMMIT")
            except Exception as e:  # nothing of the group is stored: nobody is acknowledged
                c.execute("ROLLBACK")
                for job in batch:
                    job.error, job.result = e, None
            for job in batch:
                job.done = True

    @staticmethod
    def _bump(c: sqlite3.Connection, counter: str, delta: int) -> None:
        c.execute("UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = ?", (delta, counter))

    def _one(self, sql: str, args: tuple = ()) -> Any:
        with self.read_lock:
            row = self.reader.execute(sql, args).fetchone()
        return None if row is None else row[0]

    # -- settings ----------------------------------------------------------------------------------------------
    def configure(self, **settings: Any) -> None:
        with self._tx() as c:
            c.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                          [(k, json.dumps(v)) for k, v in settings.items()])

    def setting(self, key: str, default: Any = None) -> Any:
        raw = self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return default if raw is None else json.loads(raw)

    @property
    def db_id(self) -> str:
        return self.setting("db_id")

    @property
    def overlap(self) -> int:
        return int(self.setting("overlap", 1))

    def add_pairs(self, pairs: Iterable[tuple[str, Any, str, str]]) -> int:
        """(key, prompt, a, b) rows, in labeling order; pairs already present are kept as they are."""
        with self._tx() as c:
            start = c.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]
            before = c.total_changes
            c.executemany("INSERT OR IGNORE INTO pairs (key, idx, prompt, a, b) VALUES (?, ?, ?, ?, ?)",
                          [(k, start + i, json.dumps(p), a, b) for i, (k, p, a, b) in enumerate(pairs)])
            added = c.total_changes - before
            self._bump(c, "n_pairs", added)
            return added

    def pair(self, key: str) -> dict[str, Any] | None:
        with self.read_lock:
            row = self.reader.execute("SELECT key, prompt, a, b, votes FROM pairs WHERE key = ?", (key,)).fetchone()
        return None if row is None else {**dict(row), "prompt": json.loads(row["prompt"])}

    # -- annotators, links, sessions -----------------------------------------------------------------------------
    def invite(self, name: str, *, admin: bool = False) -> str:
        """A new token for `name` (replacing any previous one: the old link stops working); returns the token."""
        token = secrets.token_urlsafe(24)
        with self._tx() as c:
            c.execute("INSERT INTO annotators (name, token_hash, admin, created) VALUES (?, ?, ?, ?) "
                      "ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash, admin = excluded.admin",
                      (check_name(name), digest(token), int(admin), time.time()))
            c.execute("DELETE FROM sessions WHERE annotator = ?", (name,))  # a replaced link logs its sessions out
        return token

    def one_time_link(self, name: str = "admin", ttl: float = ADMIN_LINK_S) -> str:
        """A token that logs in once, as an admin; returns the token."""
        token = secrets.token_urlsafe(24)
        with self._tx() as c:
            c.execute("INSERT OR IGNORE INTO annotators (name, token_hash, admin, created) VALUES (?, NULL, 1, ?)",
                      (check_name(name), time.time()))
            c.execute("INSERT INTO login_links VALUES (?, ?, 1, ?, NULL)", (digest(token), name, time.time() + ttl))
        return token

    def bearer(self, token: str) -> Identity | None:
        with self.read_lock:
            row = self.reader.execute("SELECT name, admin FROM annotators WHERE token_hash = ?",
                                    (digest(token),)).fetchone()
        return None if row is None else Identity(row["name"], bool(row["admin"]))

    def login(self, token: str) -> tuple[str, Identity] | None:
        """Exchange an annotator token or an unused one-time link for a browser session: (session id, identity)."""
        now = time.time()
        with self._tx() as c:
            link = c.execute("SELECT annotator, admin FROM login_links WHERE token_hash = ? AND used IS NULL "
                             "AND expires > ?", (digest(token), now)).fetchone()
            if link is not None:
                c.execute("UPDATE login_links SET used = ? WHERE token_hash = ?", (now, digest(token)))
                who = Identity(link["annotator"], True)
            else:
                row = c.execute("SELECT name, admin FROM annotators WHERE token_hash = ?", (digest(token),)).fetchone()
                if row is None:
                    return None
                who = Identity(row["name"], bool(row["admin"]))
            sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
            c.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                      (digest(sid), who.name, int(who.admin), csrf, now + SESSION_S))
        return sid, Identity(who.name, who.admin, csrf)

    def session(self, sid: str) -> Identity | None:
        with self.read_lock:
            row = self.reader.execute("SELECT annotator, admin, csrf FROM sessions WHERE id_hash = ? AND expires > ?",
                                    (digest(sid), time.time())).fetchone()
        return None if row is None else Identity(row["annotator"], bool(row["admin"]), row["csrf"])

    def annotators(self) -> list[dict[str, Any]]:
        with self.read_lock:
            rows = self.reader.execute("SELECT name, admin, created, token_hash IS NOT NULL AS has_token "
                                     "FROM annotators ORDER BY created").fetchall()
        return [dict(r) for r in rows]

    # -- labeling ------------------------------------------------------------------------------------------------
    def finished(self) -> str | None:
        return self.setting("finished")

    def _view(self, c: sqlite3.Connection, key: str, me: str) -> dict[str, Any]:
        row = c.execute("SELECT prompt, a, b FROM pairs WHERE key = ?", (key,)).fetchone()
        shown = display_order(self.setting("seed", 0), key, me)
        left, right = (row["a"], row["b"]) if shown == "ab" else (row["b"], row["a"])
        return {"key": key, "prompt": json.loads(row["prompt"]), "left": left, "right": right}

    def next_pair(self, me: str, now: float | None = None) -> dict[str, Any] | None:
        """The pair `me` should judge now (their open one, else the one closest to its overlap), leased to them;
        None when nothing is left for them."""
        now = time.time() if now is None else now
        with self._tx() as c:
            return None if self.finished() else self._lease_next(c, me, now)

    def _lease_next(self, c: sqlite3.Connection, me: str, now: float) -> dict[str, Any] | None:
        k, lease_s = self.overlap, float(self.setting("lease_seconds", 600))
        mine = c.execute("SELECT l.pair FROM leases l JOIN pairs p ON p.key = l.pair WHERE l.annotator = ? AND "
                         "p.votes < ? AND NOT EXISTS (SELECT 1 FROM judgments j WHERE j.pair = l.pair AND "
                         "j.annotator = ?)", (me, k, me)).fetchone()
        if mine is not None:
            c.execute("UPDATE leases SET expires = ? WHERE annotator = ?", (now + lease_s, me))
            return self._view(c, mine[0], me)
        row = c.execute(  # walks pairs_by_need from the pairs closest to their overlap; stops at the first fit
            "SELECT p.key FROM pairs p WHERE p.votes < :k "
            "AND NOT EXISTS (SELECT 1 FROM judgments j WHERE j.pair = p.key AND j.annotator = :me) "
            "AND p.votes + (SELECT COUNT(*) FROM leases l WHERE l.pair = p.key AND l.annotator != :me "
            "AND l.expires > :now) < :k ORDER BY p.votes DESC, p.idx LIMIT 1",
            {"k": k, "me": me, "now": now}).fetchone()
        if row is None:
            c.execute("DELETE FROM leases WHERE annotator = ?", (me,))
            return None
        c.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?)", (me, row[0], now, now + lease_s))
        return self._view(c, row[0], me)

    def _insert(self, c: sqlite3.Connection, row: dict[str, Any]) -> tuple[int, bool]:
        """Store one judgment; (id, duplicate). Refuses a changed answer and a vote beyond the overlap."""
        pair = c.execute("SELECT votes FROM pairs WHERE key = ?", (row["pair"],)).fetchone()
        if pair is None:
            raise UnknownPair(row["pair"])
        old = c.execute("SELECT id, choice FROM judgments WHERE pair = ? AND annotator = ?",
                        (row["pair"], row["annotator"])).fetchone()
        if old is not None:
            if old["choice"] == row["choice"]:
                return old["id"], True
            raise Conflict(f"{row['annotator']} already judged pair {row['pair']} ({old['choice']}); undo it first")
        if row["choice"] != "skip" and pair["votes"] >= self.overlap:
            raise Conflict(f"pair {row['pair']} already has its {self.overlap} judgment(s)")
        cur = c.execute("INSERT INTO judgments (pair, annotator, choice, shown, reason, created, dwell, source) "
                        "VALUES (:pair, :annotator, :choice, :shown, :reason, :created, :dwell, :source)", row)
        if row["choice"] != "skip":
            c.execute("UPDATE pairs SET votes = votes + 1 WHERE key = ?", (row["pair"],))
            self._bump(c, "n_votes", 1)
            self._bump(c, "n_complete", int(pair["votes"] + 1 == self.overlap))
        return cur.lastrowid, False

    def judge(self, me: str, pair: str, position: str, reason: str | None = None,
              now: float | None = None) -> tuple[int, bool]:
        """Store `me`'s judgment of `pair` given as the side they saw ("left", "right", "tie", "skip");
        (judgment id, duplicate) once committed."""
        jid, duplicate, _ = self.judge_and_next(me, pair, position, reason, now, lease_next=False)
        return jid, duplicate

    def judge_and_next(self, me: str, pair: str, position: str, reason: str | None = None,
                       now: float | None = None, *, lease_next: bool = True
                       ) -> tuple[int, bool, dict[str, Any] | None]:
        """judge() and next_pair() in one transaction (one commit, one fsync, per submission on the page)."""
        if position not in POSITIONS:
            raise ValueError(f"choice {position!r}: expected one of {', '.join(POSITIONS)}")
        now = time.time() if now is None else now
        shown = display_order(self.setting("seed", 0), pair, me)

        def submit(c: sqlite3.Connection) -> tuple[int, bool, dict[str, Any] | None]:
            if self.finished():
                raise Conflict("labeling is finished; judgments can no longer change")
            lease = c.execute("SELECT served FROM leases WHERE annotator = ? AND pair = ?", (me, pair)).fetchone()
            jid, duplicate = self._insert(c, {
                "pair": pair, "annotator": me, "choice": choice_from_position(position, shown), "shown": shown,
                "reason": reason or None, "created": now, "source": "page",
                "dwell": None if lease is None else round(now - lease["served"], 3)})
            c.execute("DELETE FROM leases WHERE annotator = ? AND pair = ?", (me, pair))
            return jid, duplicate, self._lease_next(c, me, now) if lease_next else None

        return self._grouped(submit)

    def undo(self, me: str, now: float | None = None) -> dict[str, Any]:
        """Remove `me`'s latest judgment made on the page; the pair becomes their open pair again."""
        now = time.time() if now is None else now
        with self._tx() as c:
            if self.finished():
                raise Conflict("labeling is finished; judgments can no longer change")
            last = c.execute("SELECT id, pair, choice FROM judgments WHERE annotator = ? AND source = 'page' "
                             "ORDER BY id DESC LIMIT 1", (me,)).fetchone()
            if last is None:
                raise Conflict("nothing to undo")
            c.execute("DELETE FROM judgments WHERE id = ?", (last["id"],))
            if last["choice"] != "skip":
                votes = c.execute("SELECT votes FROM pairs WHERE key = ?", (last["pair"],)).fetchone()[0]
                c.execute("UPDATE pairs SET votes = votes - 1 WHERE key = ?", (last["pair"],))
                self._bump(c, "n_votes", -1)
                self._bump(c, "n_complete", -int(votes == self.overlap))
            lease_s = float(self.setting("lease_seconds", 600))
            c.execute("INSERT OR REPLACE INTO leases VALUES (?, ?, ?, ?)", (me, last["pair"], now, now + lease_s))
            view = self._view(c, last["pair"], me)
        return {"undone": {"pair": last["pair"], "choice": last["choice"]}, "pair": view}

    def import_judgments(self, rows: Iterable[dict[str, Any]], source: str) -> dict[str, int]:
        """Judgments made elsewhere (another tool, an earlier labeling job): {"pair", "annotator", "choice",
        "shown", optional "reason", "created", "dwell"}. Counts: added, duplicate, unknown_pair, refused."""
        counts = {"added": 0, "duplicate": 0, "unknown_pair": 0, "refused": 0}
        with self._tx() as c:
            if self.finished():
                raise Conflict("labeling is finished; judgments can no longer change")
            for r in rows:
                row = {"reason": None, "created": time.time(), "dwell": None, **r, "source": source}
                check_name(row["annotator"])
                if row["choice"] not in CHOICES or row["shown"] not in ("ab", "ba"):
                    raise ValueError(f"judgment {r}: choice must be one of {CHOICES} and shown 'ab' or 'ba'")
                try:
                    counts["duplicate" if self._insert(c, row)[1] else "added"] += 1
                except UnknownPair:
                    counts["unknown_pair"] += 1
                except Conflict:
                    counts["refused"] += 1
        return counts

    # -- state -------------------------------------------------------------------------------------------------
    def progress(self, me: str | None = None) -> dict[str, Any]:
        k = self.overlap
        with self.read_lock:
            c = self.reader
            counts = dict(c.execute("SELECT key, CAST(value AS INTEGER) FROM meta WHERE key IN (?, ?, ?)",
                                    COUNTERS).fetchall())
            pairs, complete, votes = counts["n_pairs"], counts["n_complete"], counts["n_votes"]
            out = {"pairs": pairs, "complete": complete, "remaining": pairs - complete, "votes": votes,
                   "target": pairs * k, "overlap": k, "finished": self.finished()}
            if me is not None:
                mine = c.execute("SELECT COALESCE(SUM(choice != 'skip'), 0), COALESCE(SUM(choice = 'skip'), 0) "
                                 "FROM judgments WHERE annotator = ?", (me,)).fetchone()
                out.update(mine=mine[0], my_skips=mine[1])
        return out

    def finish(self, why: str) -> str:
        """Freeze the judgments (idempotent); returns the reason labeling finished."""
        with self._tx() as c:
            done = self.finished()
            if done is None:
                c.execute("INSERT INTO meta VALUES ('finished', ?)", (json.dumps(why),))
                done = why
        return done

    def finish_if_complete(self) -> bool:
        """Finish when every pair has its overlap of votes; in one transaction, so an undo cannot slip between."""
        with self._tx() as c:
            if self.finished():
                return True
            if c.execute("SELECT 1 FROM pairs WHERE votes < ? LIMIT 1", (self.overlap,)).fetchone():
                return False
            c.execute("INSERT INTO meta VALUES ('finished', ?)", (json.dumps("complete"),))
            return True

    def judgments(self) -> list[dict[str, Any]]:
        with self.read_lock:
            rows = self.reader.execute("SELECT id, pair, annotator, choice, shown, reason, created, dwell, source "
                                     "FROM judgments ORDER BY id").fetchall()
        return [dict(r) for r in rows]

    def pairs(self, *, pending_only: bool = False) -> list[dict[str, Any]]:
        sql = "SELECT key, prompt, a, b, votes FROM pairs" + (" WHERE votes < ?" if pending_only else "")
        with self.read_lock:
            rows = self.reader.execute(sql + " ORDER BY idx", (self.overlap,) if pending_only else ()).fetchall()
        return [{**dict(r), "prompt": json.loads(r["prompt"])} for r in rows]
