"""The page's API and its security, over real HTTP against a real uvicorn server."""

import http.client
import json
import socket
from urllib.parse import urlsplit

import pytest

from alignpipe.labeling.client import PageClient, PageError


def raw(server, method, path, body=None, headers=None):
    """One request with exactly these headers: (status, headers, parsed body)."""
    u = urlsplit(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    try:
        parsed = json.loads(data)
    except ValueError:
        parsed = data.decode(errors="replace")
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, parsed


def login(server, token):
    """A browser's login: the session cookie and the page's CSRF token."""
    status, headers, _ = raw(server, "GET", f"/login?t={token}")
    assert status == 303
    cookie = headers["set-cookie"].split(";")[0]
    assert "httponly" in headers["set-cookie"].lower() and "samesite=lax" in headers["set-cookie"].lower()
    _, _, html = raw(server, "GET", headers["location"], headers={"Cookie": cookie})
    csrf = html.split('name="csrf-token" content="')[1].split('"')[0]
    return cookie, csrf


ROUTES = [("GET", "/"), ("GET", "/admin"), ("GET", "/static/label.js"), ("GET", "/api/state"),
          ("GET", "/api/admin"), ("POST", "/api/judge"), ("POST", "/api/undo"), ("POST", "/api/admin/finish"),
          ("GET", "/login"), ("GET", "/login?t=not-a-token"), ("GET", "/docs"), ("GET", "/openapi.json"),
          ("GET", "/nothing/here"), ("PUT", "/api/judge")]


@pytest.mark.parametrize("method, path", ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_every_request_without_a_valid_token_is_401(page, method, path):
    server, db = page
    body = json.dumps({"pair": "0:0:1", "choice": "left"}) if method == "POST" else None
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": "alignpipe_label_x=forged"}):
        status, got, _ = raw(server, method, path, body, headers)
        assert status == 401, (headers, status)
        assert "content-security-policy" in got
    assert db.judgments() == []


def test_annotators_judge_undo_and_see_progress(page):
    server, db = page
    alice = PageClient(server.url, db.invite("alice"))
    s = alice.state()
    assert s["me"] == "alice" and s["guidelines"] == "Prefer the kinder answer." and not s["admin"]
    first = s["pair"]["key"]
    r = alice.judge(first, "left", reason="friendlier")
    assert not r["duplicate"] and r["progress"]["mine"] == 1 and r["pair"]["key"] != first
    assert alice.judge(first, "left")["duplicate"]  # a retried submission is recognized, not stored twice
    with pytest.raises(PageError, match="409.*already judged"):
        alice.judge(first, "right")
    second = r["pair"]["key"]
    alice.judge(second, "skip")
    undone = alice.undo()
    assert undone["undone"]["pair"] == second and undone["pair"]["key"] == second
    assert [(j["pair"], j["annotator"]) for j in db.judgments()] == [(first, "alice")]
    assert alice.state()["pair"]["key"] == second  # the undone pair is back on screen
    with pytest.raises(PageError, match="404.*no pair"):
        alice.judge("nope", "left")
    with pytest.raises(PageError, match="422"):
        alice.call("POST", "/api/judge", {"pair": first, "choice": "A"})
    with pytest.raises(PageError, match="403.*admins only"):
        alice.admin()


def test_another_token_cannot_change_my_judgments(page):
    server, db = page
    alice, bob = PageClient(server.url, db.invite("alice")), PageClient(server.url, db.invite("bob"))
    pair = alice.state()["pair"]["key"]
    alice.judge(pair, "left")
    mine = db.judgments()
    with pytest.raises(PageError, match="409.*nothing to undo"):
        bob.undo()
    with pytest.raises(PageError, match="422"):  # there is no way to name whose judgment it is
        bob.call("POST", "/api/judge", {"pair": pair, "choice": "right", "annotator": "alice"})
    bob.judge(pair, "right")  # bob's own vote on the same pair, stored under bob
    assert [j for j in db.judgments() if j["annotator"] == "alice"] == mine
    assert bob.undo()["undone"]["pair"] == pair  # bob's undo takes back bob's vote, and only that
    with pytest.raises(PageError, match="409.*nothing to undo"):
        bob.undo()
    assert [j for j in db.judgments() if j["annotator"] == "alice"] == mine


def test_cookie_sessions_need_the_csrf_token_and_the_same_site(page):
    server, db = page
    cookie, csrf = login(server, db.invite("alice"))
    pair = db.next_pair("alice")["key"]
    body = json.dumps({"pair": pair, "choice": "left"})
    base = {"Cookie": cookie, "Content-Type": "application/json"}
    assert raw(server, "GET", "/api/state", headers={"Cookie": cookie})[0] == 200
    for extra, why in [({}, "CSRF"), ({"X-CSRF-Token": "guess"}, "CSRF"),
                       ({"X-CSRF-Token": csrf, "Origin": "http://evil.example"}, "cross-origin"),
                       ({"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}, "cross-site")]:
        status, _, detail = raw(server, "POST", "/api/judge", body, {**base, **extra})
        assert status == 403 and why in detail["detail"], (extra, status, detail)
    assert db.judgments() == []
    origin = server.url.rstrip("/")
    status, _, ok = raw(server, "POST", "/api/judge", body, {**base, "X-CSRF-Token": csrf, "Origin": origin,
                                                            "Sec-Fetch-Site": "same-origin"})
    assert status == 200 and ok["saved"] and len(db.judgments()) == 1


def test_one_time_admin_link_works_once_and_admins_can_finish(page):
    server, db = page
    link = db.one_time_link()
    cookie, csrf = login(server, link)
    assert raw(server, "GET", f"/login?t={link}")[0] == 401
    status, _, report = raw(server, "GET", "/api/admin", headers={"Cookie": cookie})
    assert status == 200 and report["progress"]["pairs"] == 6 and "agreement" in report
    alice = PageClient(server.url, db.invite("alice"))
    with pytest.raises(PageError, match="403"):
        alice.finish()
    assert raw(server, "POST", "/api/admin/finish", headers={"Cookie": cookie})[0] == 403  # no CSRF token
    status, _, done = raw(server, "POST", "/api/admin/finish", headers={"Cookie": cookie, "X-CSRF-Token": csrf})
    assert status == 200 and done == {"finished": "finished by admin"} and db.finished() == "finished by admin"
    with pytest.raises(PageError, match="409.*finished"):
        alice.judge("0:0:1", "left")
    assert alice.state()["pair"] is None


def test_oversized_bodies_are_refused(page):
    server, db = page
    token = db.invite("alice")
    big = json.dumps({"pair": "0:0:1", "choice": "left", "reason": "x" * 40000})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    assert raw(server, "POST", "/api/judge", big, headers)[0] == 413
    # no Content-Length: chunks are counted as they arrive
    u = urlsplit(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("POST", "/api/judge", body=iter([b"{" + b" " * 10000] * 4), headers=headers,
                 encode_chunked=True)
    assert conn.getresponse().status == 413
    long_reason = json.dumps({"pair": "0:0:1", "choice": "left", "reason": "x" * 2001})
    assert raw(server, "POST", "/api/judge", long_reason, headers)[0] == 422
    assert db.judgments() == []


@pytest.mark.parametrize("path", ["/static/../db.py", "/static/..%2fdb.py", "/static/%2e%2e%2fapp.py",
                                  "/static/label.html", "/static/", "/labels.db", "/static/..%2f..%2flabels.db"])
def test_no_request_path_reaches_the_file_system(page, path):
    server, db = page
    status, _, body = raw(server, "GET", path, headers={"Authorization": f"Bearer {db.invite('alice')}"})
    assert status == 404 and "import" not in str(body)


def test_static_files_and_security_headers(page):
    server, db = page
    status, headers, body = raw(server, "GET", "/static/label.js",
                                headers={"Authorization": f"Bearer {db.invite('alice')}"})
    assert status == 200 and headers["content-type"].startswith("text/javascript") and "textContent" in body
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["referrer-policy"] == "no-referrer"


def test_the_page_listens_on_localhost_only(page):
    server, _ = page
    host, port = server.sock.getsockname()[:2]
    assert host == "127.0.0.1"
    with pytest.raises(OSError):  # another loopback address reaches a socket bound to 0.0.0.0, not to 127.0.0.1
        socket.create_connection(("127.0.0.2", port), timeout=2).close()
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
