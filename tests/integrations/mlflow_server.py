"""A real `mlflow server` for the tests: SQLite backend store, a local artifact root served through the server,
a free localhost port; started from the side environment .venvs/mlflow-server (built by scripts/setup_env.sh)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def side_env(name: str) -> Path:
    """The bin dir of .venvs/NAME, built (or found up to date) by scripts/setup_env.sh."""
    res = subprocess.run(["bash", str(ROOT / "scripts" / "setup_env.sh"), name], capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stderr
    return Path(res.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    def __init__(self, bin_dir: Path, root: Path):
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        self.log = open(root / "server.log", "w")  # noqa: SIM115 — open for the server's lifetime
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        self.proc = subprocess.Popen(
            [str(bin_dir / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
        self._wait_healthy(root)

    def _wait_healthy(self, root: Path, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (root / "server.log").read_text()
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise AssertionError(f"mlflow server not healthy in {timeout} s: {(root / 'server.log').read_text()}")

    def kill(self) -> None:
        """Stop the server and its workers at once (its own process group)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self.log.close()
