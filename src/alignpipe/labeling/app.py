"""The labeling page: a FastAPI app over one LabelDB.

Security, by construction rather than by configuration:
- every request needs a token: `Authorization: Bearer TOKEN` (scripts) or the session cookie a login link sets
  (browsers; `/login?t=TOKEN` takes an annotator's token or a one-time admin link). Anything else is 401;
- an identity comes only from the token, and a judgment is stored under it: there is no request that names
  another annotator's judgment, so no token can change someone else's;
- state changes are POSTs; with a cookie session they must carry the session's CSRF token (header
  X-CSRF-Token, which another site cannot read or set) and must not come from another site (Sec-Fetch-Site,
  Origin). A bearer token needs no CSRF token: browsers never attach it on their own;
- bodies over `max_body` bytes are refused with 413 before any handler runs;
- no request path reaches the file system: the page's templates and static files are read once from the package
  into memory and looked up by exact name;
- responses say no-store, nosniff, no framing, no referrer, and a Content-Security-Policy allowing only this
  origin's script (responses are model output: the page inserts them as text, never as HTML).
"""

from __future__ import annotations

import hmac
import html
import importlib.resources
import statistics
from typing import Any, Literal
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from alignpipe.labeling import agreement
from alignpipe.labeling.db import SESSION_S, Conflict, Identity, LabelDB, UnknownPair

MAX_BODY = 16 * 1024
STATIC_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                                 b"img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
NO_TOKEN = ("a token is required: open the link `alignpipe label invite NAME` printed, or send "
            "'Authorization: Bearer TOKEN'")


class JudgeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pair: str = Field(max_length=200)
    choice: Literal["left", "right", "tie", "skip"]
    reason: str | None = Field(default=None, max_length=2000)


def _package_files() -> tuple[dict[str, str], dict[str, tuple[bytes, str]]]:
    root = importlib.resources.files("alignpipe.labeling")
    templates = {p.name: p.read_text(encoding="utf-8") for p in (root / "templates").iterdir() if p.is_file()}
    static = {p.name: (p.read_bytes(), STATIC_TYPES[p.name[p.name.rfind("."):]])
              for p in (root / "static").iterdir() if p.is_file() and p.name[p.name.rfind("."):] in STATIC_TYPES}
    return templates, static


class Guard:
    """ASGI middleware: refuse oversized bodies (413) before the app reads them; add the security headers."""

    def __init__(self, app: Any, max_body: int = MAX_BODY):
        self.app, self.max_body = app, max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secure(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _too_large(send_secure, self.max_body)
            return
        body, more = b"", True
        while more:  # read (at most max_body bytes of) the body here, then replay it to the app
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body:
                await _too_large(send_secure, self.max_body)
                return
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send_secure)


async def _too_large(send: Any, limit: int) -> None:
    payload = f'{{"detail": "request body over {limit} bytes"}}'.encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})


class Auth:
    """FastAPI dependencies: who is asking (identity), whether they may change state (writer), admins."""

    def __init__(self, db: LabelDB, cookie: str):
        self.db, self.cookie = db, cookie

    def identity(self, request: Request) -> Identity:
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            who = self.db.bearer(auth[7:].strip())
        else:
            sid = request.cookies.get(self.cookie)
            who = self.db.session(sid) if sid else None
        if who is None:
            raise HTTPException(401, NO_TOKEN)
        return who

    def writer(self, request: Request) -> Identity:
        """A state change: same-site only, and a cookie session must prove it is the page (CSRF token)."""
        who = self.identity(request)
        if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            raise HTTPException(403, "cross-site request refused")
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            raise HTTPException(403, "cross-origin request refused")
        if who.csrf is not None and not hmac.compare_digest(request.headers.get("x-csrf-token", ""), who.csrf):
            raise HTTPException(403, "missing or wrong CSRF token (X-CSRF-Token); reload the page")
        return who

    def admin(self, request: Request) -> Identity:
        who = self.identity(request)
        if not who.admin:
            raise HTTPException(403, "admins only: use the admin link `alignpipe run` printed, or "
                                     "`alignpipe label invite NAME --admin`")
        return who

    def admin_writer(self, request: Request) -> Identity:
        self.admin(request)
        return self.writer(request)


def create_app(db: LabelDB, *, max_body: int = MAX_BODY) -> Guard:
    """The page over `db`, as an ASGI app."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)  # nothing served without a token
    auth = Auth(db, cookie=f"alignpipe_label_{db.db_id[:8]}")  # a cookie per labeling job: two jobs on one host
    app.add_exception_handler(Conflict, lambda r, e: JSONResponse({"detail": str(e)}, status_code=409))
    app.add_exception_handler(UnknownPair, lambda r, e: JSONResponse(
        {"detail": f"no pair {e.args[0]!r} in this labeling job"}, status_code=404))
    _pages(app, db, auth)
    _api(app, db, auth)
    return Guard(app, max_body)


def _pages(app: FastAPI, db: LabelDB, auth: Auth) -> None:
    templates, static = _package_files()

    def page(name: str, who: Identity) -> HTMLResponse:
        return HTMLResponse(templates[name].replace("{{csrf}}", html.escape(who.csrf or "", quote=True)))

    @app.get("/login")
    def login(t: str = "") -> Response:
        got = db.login(t) if t else None
        if got is None:
            raise HTTPException(401, "this link is not valid (one-time admin links work once; an annotator's "
                                     "link stops working when they are invited again)")
        sid, who = got
        resp = RedirectResponse("/admin" if who.admin else "/", status_code=303)
        resp.set_cookie(auth.cookie, sid, max_age=SESSION_S, httponly=True, samesite="lax", path="/")
        return resp

    @app.get("/")
    def index(who: Identity = Depends(auth.identity)) -> HTMLResponse:
        return page("label.html", who)

    @app.get("/admin")
    def admin_page(who: Identity = Depends(auth.admin)) -> HTMLResponse:
        return page("admin.html", who)

    @app.get("/static/{name}")
    def static_file(name: str, who: Identity = Depends(auth.identity)) -> Response:
        if name not in static:  # a lookup in a dict read at start-up: no request reaches the file system
            raise HTTPException(404, "no such file")
        content, media = static[name]
        return Response(content, media_type=media)


def _api(app: FastAPI, db: LabelDB, auth: Auth) -> None:
    @app.get("/api/state")
    def state(who: Identity = Depends(auth.identity)) -> dict[str, Any]:
        return {"me": who.name, "admin": who.admin, "title": db.setting("title", "labeling"),
                "guidelines": db.setting("guidelines", ""), "pair": db.next_pair(who.name),
                "progress": db.progress(who.name)}

    @app.post("/api/judge")
    def judge(body: JudgeBody, who: Identity = Depends(auth.writer)) -> dict[str, Any]:
        jid, duplicate, pair = db.judge_and_next(who.name, body.pair, body.choice, body.reason)
        return {"saved": jid, "duplicate": duplicate, "pair": pair, "progress": db.progress(who.name)}

    @app.post("/api/undo")
    def undo(who: Identity = Depends(auth.writer)) -> dict[str, Any]:
        return {**db.undo(who.name), "progress": db.progress(who.name)}

    @app.get("/api/admin")
    def admin_state(who: Identity = Depends(auth.admin)) -> dict[str, Any]:
        return admin_report(db)

    @app.post("/api/admin/finish")
    def finish(who: Identity = Depends(auth.admin_writer)) -> dict[str, Any]:
        return {"finished": db.finish(f"finished by {who.name}")}

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def elsewhere(path: str, who: Identity = Depends(auth.identity)) -> None:
        raise HTTPException(404, "not found")  # after the token check: without one, even this is a 401


def admin_report(db: LabelDB) -> dict[str, Any]:
    """Progress, per-annotator counts and dwell times, and agreement: the admin page's and `label status`'s data."""
    judgments = db.judgments()
    people: dict[str, dict[str, Any]] = {a["name"]: {"judgments": 0, "skips": 0, "dwell": []}
                                         for a in db.annotators()}
    for j in judgments:
        p = people.setdefault(j["annotator"], {"judgments": 0, "skips": 0, "dwell": []})
        p["skips" if j["choice"] == "skip" else "judgments"] += 1
        if j["dwell"] is not None:
            p["dwell"].append(j["dwell"])
    agree = agreement.summarize(judgments)
    for name, p in people.items():
        dwell = p.pop("dwell")
        p["median_dwell_s"] = statistics.median(dwell) if dwell else None
        p["agreement_with_majority"] = agree["agreement_with_majority"].get(name)
    return {"progress": db.progress(), "annotators": people, "agreement": agree,
            "title": db.setting("title", "labeling")}
