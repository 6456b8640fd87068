"""Bad bucket workspaces are one-line errors (exit 2) naming the URI and what to do, with nothing written; and no
secret ever lands in a manifest, the journal, a log, the bucket or any command's output."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bucket_util import SECRET

from alignpipe.pipeline.fs import open_fs

RUN = ["run", "--example", "-q", "-w"]


def cli(*args, env=None):
    r = subprocess.run([sys.executable, "-m", "alignpipe", *map(str, args)], capture_output=True, text=True,
                       timeout=180, env=env or os.environ.copy())
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return r


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_missing_bucket(s3):
    r = cli(*RUN, "s3://no-such-bucket-here/ws")
    assert r.returncode == 2
    assert "workspace s3://no-such-bucket-here/ws: the bucket 'no-such-bucket-here' does not exist" in r.stderr


def test_a_prefix_holding_something_else(s3):
    fs = open_fs(s3 + "/data")
    fs.write_bytes("train.csv", b"a,b\n")
    r = cli(*RUN, s3 + "/data")
    assert r.returncode == 2 and "the prefix holds other objects (train.csv) and no alignpipe workspace" in r.stderr
    assert list(fs.find("")) == ["train.csv"]  # nothing written


def test_an_unreachable_endpoint(s3, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    t0 = time.time()
    r = cli(*RUN, s3 + "/ws")
    assert r.returncode == 2 and f"cannot reach {s3}/ws: the endpoint is unreachable" in r.stderr, r.stderr
    assert time.time() - t0 < 60


def test_an_unknown_scheme():
    r = cli(*RUN, "http://example.com/ws")
    assert r.returncode == 2 and "not http:// URIs" in r.stderr


@pytest.fixture
def strict_s3(tmp_path):
    """A second S3 server that checks credentials (moto with IAM authorization on from the first request)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.time() < deadline, "moto server did not start"
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait()


def test_denied_credentials_name_the_uri_and_never_the_secret(strict_s3, s3, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", strict_s3)
    r = cli(*RUN, "s3://team-bucket/ws")
    assert r.returncode == 2 and "cannot reach s3://team-bucket/ws: access denied; check the credentials" in r.stderr
    assert SECRET not in r.stdout + r.stderr


def test_no_secret_in_any_output_or_stored_byte(s3, tmp_path):
    ws = s3 + "/ws"
    outputs = [cli(*RUN, ws), cli("run", "--example", "-w", ws), cli("artifacts", "-w", ws),
               cli("status", "-w", ws), cli("logs", "words", "-w", ws), cli("show", "report", "-w", ws),
               cli("verify", "-w", ws), cli("push", "report", "-w", ws, "--to", tmp_path / "local")]
    assert all(r.returncode == 0 for r in outputs), [r.stderr for r in outputs]
    assert not any(SECRET in r.stdout + r.stderr for r in outputs)
    fs = open_fs(ws)
    stored = {k: fs.read_bytes(k) for k in fs.find("")}
    assert stored and not [k for k, v in stored.items() if SECRET.encode() in v]
    local = [p for root in (Path(os.environ["ALIGNPIPE_CACHE"]), tmp_path / "local") for p in root.rglob("*")
             if p.is_file()]
    assert local and not [p for p in local if SECRET.encode() in p.read_bytes()]
