"""Serving the page with uvicorn on a socket bound here (so the address is known before the first request): in a
background thread inside the label stage, or in the foreground for `alignpipe label serve`.

Bound to 127.0.0.1 unless a host is given: a labeling page holds unpublished model output and annotators' work.
"""

from __future__ import annotations

import socket
import threading
import time

from alignpipe.labeling.db import LabelDB
from alignpipe.pipeline.errors import UserError

LOCALHOST = "127.0.0.1"
INSTALL = "pip install 'alignpipe[label]'"


def require_page_packages(what: str) -> None:
    """A one-line error naming the install command when FastAPI or uvicorn is missing."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise UserError(f"{what} needs FastAPI and uvicorn ({e.name} is not installed): {INSTALL}") from None


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot serve the labeling page on {host}:{port}: {e.strerror}; choose another port "
                        "(--port, or ALIGNPIPE_LABEL_PORT for a pipeline run)") from None
    sock.listen(1024)
    return sock


def free_or_zero(host: str, port: int | None) -> int:
    """`port` if it can be bound now (a restarted stage keeps its address, so open pages reconnect), else 0."""
    if not port:
        return 0
    try:
        bind(host, port).close()
        return port
    except UserError:
        return 0


class PageServer:
    """The labeling page for one LabelDB on host:port (port 0: any free port)."""

    def __init__(self, db: LabelDB, host: str = LOCALHOST, port: int = 0):
        require_page_packages("the labeling page")
        import uvicorn

        from alignpipe.labeling.app import create_app

        self.sock = bind(host, port)
        config = uvicorn.Config(create_app(db), log_level="warning", access_log=False, lifespan="off",
                                timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def serve_forever(self) -> None:
        """Foreground (the CLI): returns on Ctrl-C or SIGTERM, handled by uvicorn."""
        self.server.run(sockets=[self.sock])

    def start(self, wait_s: float = 30.0) -> PageServer:
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="labeling-page")
        self.thread.start()
        deadline = time.monotonic() + wait_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the labeling page did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=15)
        self.sock.close()

    def __enter__(self) -> PageServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
