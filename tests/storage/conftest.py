"""A real S3-compatible server on localhost (moto's server mode), started once per session; each test gets a
bucket of its own, the standard AWS environment pointing at the server, and a cache directory of its own."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from bucket_util import SECRET

ENGINE_TESTS = Path(__file__).resolve().parent.parent / "engine"  # teststages: small user stages


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch, tmp_path):
    """A new bucket; returns its URI. Stage processes inherit the environment."""
    import boto3

    env = {"AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "AKIAALIGNPIPETEST", "AWS_SECRET_ACCESS_KEY": SECRET,
           "AWS_DEFAULT_REGION": "us-east-1", "ALIGNPIPE_CACHE": str(tmp_path / "cache"),
           "ALIGNPIPE_RETRY_BASE_DELAY": "0.05"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ENGINE_TESTS), os.environ.get("PYTHONPATH")])))
    monkeypatch.syspath_prepend(str(ENGINE_TESTS))
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=bucket)
    import fsspec

    fsspec.filesystem("s3").invalidate_cache()  # instances are cached: a new bucket must not look missing
    return f"s3://{bucket}"


@pytest.fixture(scope="session")
def pg_server():
    from postgres import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture
def pg(pg_server):
    """A fresh database on the session's PostgreSQL server; returns its URL."""
    import psycopg

    name = f"j_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg_server.rsplit("/", 1)[0] + f"/{name}"
