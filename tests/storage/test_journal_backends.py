"""The journal on SQLite and on PostgreSQL: the same tests, the same answers; versioned migrations bring an old
SQLite journal up to date; a PostgreSQL journal is found by every machine that reaches the workspace."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import pytest
from bucket_util import machine

from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.journal import MIGRATIONS, Attempt, Journal, check_journal_url


@pytest.fixture(params=["sqlite", "postgresql"])
def journal(request, tmp_path):
    url = request.getfixturevalue("pg") if request.param == "postgresql" else None
    j = Journal(tmp_path / "ws", url=url)
    yield j
    j.close()


def attempt(run, stage, n, status, t, fp="fp", outputs=None, cache_hit=False):
    return Attempt(run, stage, n, status, t, t + 1, 0, None, cache_hit, fp, outputs or {}, "host", f"log-{stage}-{n}")


def test_runs_attempts_plans_and_platform_runs(journal):
    a = journal.start_run("p", "p.yaml", ["alignpipe", "run"])
    journal.record_plan(a, ["x", "y"])
    journal.record_plan(a, ["x", "y", "z"])  # replaced, not duplicated
    journal.record_attempt(attempt(a, "x", 1, "running", 10.0))
    journal.record_attempt(attempt(a, "x", 1, "failed", 10.0))  # the same attempt, updated
    journal.record_attempt(attempt(a, "x", 2, "done", 20.0, outputs={"out": "id1"}))
    journal.record_attempt(attempt(a, "y", 0, "cached", 30.0, outputs={"out": "id2"}, cache_hit=True))
    assert [(x.stage, x.attempt, x.status) for x in journal.attempts(a)] == [("x", 1, "failed"), ("x", 2, "done"),
                                                                             ("y", 0, "cached")]
    assert journal.plan(a) == ["x", "y", "z"]
    assert journal.last_attempt("y").cache_hit and journal.last_attempt("y", executed=True) is None
    assert journal.last_attempt("x", executed=True).outputs == {"out": "id1"}
    b = journal.start_run("p", "p.yaml", ["exec"], platform="airflow", platform_run_id="dag-run-1")
    c = journal.start_run("p", "p.yaml", ["run"])  # an exclusive run: the earlier running ones were abandoned
    status = {r["id"]: r["status"] for r in journal.runs()}
    assert status == {a: "abandoned", b: "abandoned", c: "running"}
    assert journal.platform_runs() == {b: ("airflow", "dag-run-1")}
    journal.end_run(c, "done")
    assert journal.run_info(c)["status"] == "done" and journal.run_info(c)["argv"] == ["run"]
    assert journal.resolve_run(a[:-2]) == a and journal.latest_run() == c
    with pytest.raises(UserError, match="no run matches 'zzz'"):
        journal.resolve_run("zzz")
    assert journal.referenced_artifacts() == set()  # the latest run (c) of pipeline p produced nothing


def test_metrics_and_the_external_hash_cache(journal):
    run = journal.start_run("p", "p.yaml", [])
    journal.add_metrics(run, "ppo", "fp1", 2, {"kl": 0.5, "score": 1.0}, 1.0)
    journal.add_metrics(run, "ppo", "fp1", 1, {"kl": 0.25}, 0.5)
    assert journal.metrics("fp1") == {"kl": [(1, 0.25), (2, 0.5)], "score": [(2, 1.0)]}
    assert journal.external_id("/data.jsonl", 10, 1_733_000_000_123_456_789) is None
    journal.remember_external("/data.jsonl", 10, 1_733_000_000_123_456_789, "abc")  # ns mtimes need 64 bits
    journal.remember_external("/data.jsonl", 10, 1_733_000_000_123_456_789, "def")
    assert journal.external_id("/data.jsonl", 10, 1_733_000_000_123_456_789) == "def"
    started = journal.run_info(run)["started"]
    assert abs(started - __import__("time").time()) < 60  # full precision timestamps (not float4)


def test_an_old_sqlite_journal_is_migrated_and_read_only_opens_leave_it_as_it_was(tmp_path):
    (tmp_path / "ws" / ".alignpipe").mkdir(parents=True)
    db = sqlite3.connect(tmp_path / "ws" / ".alignpipe" / "journal.db")
    for statement in MIGRATIONS[0]:  # a journal from before plans, platform runs and the versions table
        db.execute(statement)
    db.execute("INSERT INTO runs VALUES ('r1', 'p', 's', 1.0, 2.0, 'done', 1, 'h', '[]')")
    db.commit()
    db.close()
    old = Journal(tmp_path / "ws", readonly=True)
    assert old.version == 1 and old.plan("r1") is None and old.platform_runs() == {}
    old.close()
    j = Journal(tmp_path / "ws")
    assert j.version == len(MIGRATIONS) and [r["id"] for r in j.runs()] == ["r1"]
    j.record_plan("r1", ["a"])
    assert j.plan("r1") == ["a"]


def test_journal_urls_never_carry_a_password():
    assert check_journal_url("postgresql://me@db.internal:5432/runs")
    with pytest.raises(UserError, match=r"journal URL holds a password: put it in PGPASSWORD or ~/.pgpass and give "
                                        r"postgresql://me@db.internal:5432/runs instead"):
        check_journal_url("postgresql://me:hunter2@db.internal:5432/runs")
    with pytest.raises(UserError, match="expected postgresql://USER@HOST:PORT/DATABASE"):
        check_journal_url("mysql://me@db/runs")


def test_status_runs_metrics_and_logs_from_another_machine(s3, pg, tmp_path):
    ws = s3 + "/ws"
    run = subprocess.run([sys.executable, "-m", "alignpipe", "run", "--example", "-q", "-w", ws, "--journal", pg],
                         env=machine(tmp_path, "a"), capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr

    def elsewhere(*args):  # machine b: its own cache, no --journal (the workspace says where the journal is)
        return subprocess.run([sys.executable, "-m", "alignpipe", *args, "-w", ws], env=machine(tmp_path, "b"),
                              capture_output=True, text=True, timeout=120)

    status = elsewhere("status")
    assert status.returncode == 0 and "corpus" in status.stdout and "done" in status.stdout, status.stderr
    assert "example" in elsewhere("runs").stdout
    logs = elsewhere("logs", "words")  # written on machine a, read from the bucket's mirror
    assert logs.returncode == 0 and "[words] 3200 words in 400 lines, 14 distinct" in logs.stdout, logs.stderr
    other = subprocess.run([sys.executable, "-m", "alignpipe", "run", "--example", "-q", "-w", ws, "--journal",
                            pg.rsplit("/", 1)[0] + "/other"], env=machine(tmp_path, "c"), capture_output=True,
                           text=True, timeout=120)
    assert other.returncode == 2 and f"records its journal at {pg}" in other.stderr


def test_logs_follow_a_stage_running_on_another_machine(s3, pg, tmp_path):
    spec = tmp_path / "chatty.yaml"
    spec.write_text(f"name: chatty\nworkspace: {s3}/ws\njournal: {pg}\nstages:\n  talk:\n    uses: teststages:chatty\n"
                    "    params: {lines: 12, step_s: 0.5}\n")
    a = subprocess.Popen([sys.executable, "-m", "alignpipe", "run", str(spec), "-q"], env=machine(tmp_path, "a"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:  # until the stage has started on machine a
            probe = subprocess.run([sys.executable, "-m", "alignpipe", "status", "-w", f"{s3}/ws"],
                                   env=machine(tmp_path, "b"), capture_output=True, text=True)
            if "running" in probe.stdout:
                break
            assert time.time() < deadline and a.poll() is None, probe.stderr
            time.sleep(0.3)
        follow = subprocess.run([sys.executable, "-m", "alignpipe", "logs", "talk", "-f", "--interval", "0.3", "-w",
                                 f"{s3}/ws"], env=machine(tmp_path, "b"), capture_output=True, text=True, timeout=120)
    finally:
        a.wait(timeout=120)
    assert follow.returncode == 0, follow.stderr
    assert [ln for ln in follow.stdout.splitlines() if ln.startswith("[talk] line")] == [
        f"[talk] line {i}" for i in range(12)]  # every line once, in order, then it stopped with the stage
