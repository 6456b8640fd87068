"""`alignpipe label ...` as a team uses it: real subprocesses, exit codes, output."""

import json
import subprocess
import sys
import urllib.request

from labeling_util import cli, make_db

from alignpipe.labeling.client import PageClient


def test_invite_status_and_finish(tmp_path):
    db = make_db(tmp_path / "labels.db", n=2, overlap=2)
    db.configure(url="http://127.0.0.1:8765/")
    r = cli("label", "invite", "alice", "--db", tmp_path / "labels.db")
    assert r.returncode == 0, r.stderr
    link, token_line = r.stdout.splitlines()[:2]
    token = token_line.rsplit(" ", 1)[1]
    assert link == f"alice: http://127.0.0.1:8765/login?t={token}" and db.bearer(token).name == "alice"
    db.judge("alice", "0:0:1", "left")
    db.judge("bob", "0:0:1", "left")
    status = json.loads(cli("label", "status", "--db", tmp_path / "labels.db", "--json").stdout)
    assert status["progress"]["votes"] == 2 and status["annotators"]["alice"]["judgments"] == 1
    assert "2 of 4 judgments (overlap 2), 1 of 2 pairs complete" in cli("label", "status", "--db",
                                                                          tmp_path / "labels.db").stdout
    r = cli("label", "finish", "--db", tmp_path / "labels.db")
    assert r.returncode == 0 and db.finished() == "finished from the command line"
    r = cli("label", "invite", "x y", "--db", tmp_path / "labels.db")
    assert r.returncode == 2 and "annotator name 'x y'" in r.stderr
    r = cli("label", "invite", "alice", "--stage", "labels", "-w", tmp_path / "nows")
    assert r.returncode == 2 and "no alignpipe workspace here" in r.stderr


def test_serve_a_job_on_localhost_until_stopped(tmp_path):
    db = make_db(tmp_path / "labels.db", n=2)
    token = db.invite("alice")
    proc = subprocess.Popen([sys.executable, "-m", "alignpipe", "label", "serve", "--db", str(tmp_path / "labels.db")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().split()[-1]
        admin = proc.stdout.readline().split()[-1]
        assert url.startswith("http://127.0.0.1:") and admin.startswith(f"{url}login?t=")
        client = PageClient(url, token)
        pair = client.state()["pair"]["key"]
        client.judge(pair, "tie")
        assert [j["choice"] for j in db.judgments()] == ["tie"]
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with browser.open(admin) as resp:  # the one-time admin link logs in and lands on the admin page
            assert resp.url.endswith("/admin") and "Finish labeling" in resp.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert db.setting("url") == url


def test_the_cli_starts_without_fastapi_or_uvicorn():
    probe = ("import sys, alignpipe.cli, alignpipe.stages.label; "
             "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
