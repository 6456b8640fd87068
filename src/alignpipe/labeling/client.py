"""PageClient: the labeling page's API over plain HTTP (stdlib only), for scripts: scripted annotators, a bot
posting pre-labels under its own name, an operator's "finish" from a shell.

    c = PageClient("http://127.0.0.1:8765/", token)
    s = c.state()                        # {"me", "pair": {"key", "prompt", "left", "right"} | None, "progress", ...}
    r = c.judge(s["pair"]["key"], "left")  # "left" | "right" | "tie" | "skip"; returns the next pair
"""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import urlsplit


class PageError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(f"HTTP {status}: {detail}")
        self.status, self.detail = status, detail


class PageClient:
    def __init__(self, url: str, token: str, timeout: float = 30.0):
        parts = urlsplit(url)
        self.host, self.port, self.timeout = parts.hostname or "127.0.0.1", parts.port or 80, timeout
        self.headers = {"Authorization": f"Bearer {token}"}
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request on a kept-alive connection; raises PageError on an HTTP error, OSError when unreachable."""
        payload = None if body is None else json.dumps(body).encode()
        headers = {**self.headers, **({"Content-Type": "application/json"} if payload is not None else {})}
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=payload, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException):
            self.close()  # the next call reconnects
            raise
        try:
            parsed = json.loads(data) if data else {}
        except ValueError:
            parsed = {"detail": data.decode(errors="replace")}
        if resp.status >= 400:
            raise PageError(resp.status, str(parsed.get("detail", parsed)))
        return parsed

    def state(self) -> dict[str, Any]:
        return self.call("GET", "/api/state")

    def judge(self, pair: str, choice: str, reason: str | None = None) -> dict[str, Any]:
        return self.call("POST", "/api/judge", {"pair": pair, "choice": choice, "reason": reason})

    def undo(self) -> dict[str, Any]:
        return self.call("POST", "/api/undo")

    def admin(self) -> dict[str, Any]:
        return self.call("GET", "/api/admin")

    def finish(self) -> dict[str, Any]:
        return self.call("POST", "/api/admin/finish")
