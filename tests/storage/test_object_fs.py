"""The file interface's twins behave alike where the store relies on them: atomic replace, exclusive create,
listings with sizes, conditional replace (leases) — on a local directory, memory:// (fsspec) and a real S3 server
(botocore)."""

from __future__ import annotations

import uuid

import pytest

from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.fs import LocalFS, ObjectFS, open_fs
from alignpipe.pipeline.s3 import S3FS


@pytest.fixture(params=["local", "memory", "s3"])
def fs(request, tmp_path):
    if request.param == "local":
        return LocalFS(tmp_path / "ws")
    if request.param == "memory":
        return ObjectFS(f"memory://ws-{uuid.uuid4().hex}")
    return open_fs(request.getfixturevalue("s3") + "/prefix")


def test_write_read_create_list_find_remove(fs):
    fs.write_bytes("refs/a.json", b"1")
    fs.write_bytes("refs/a.json", b"22")  # replace
    assert fs.read_bytes("refs/a.json") == b"22"
    assert fs.create("artifacts/x/manifest.json", b"first")
    assert not fs.create("artifacts/x/manifest.json", b"second")  # exclusive: the first stays
    assert fs.read_bytes("artifacts/x/manifest.json") == b"first"
    fs.write_bytes("artifacts/x/sub/w.bin", b"abc")
    assert fs.listdir("") == ["artifacts", "refs"] and fs.listdir("artifacts") == ["x"]
    assert {k: v.size for k, v in fs.find("artifacts/x").items()} == {"manifest.json": 5, "sub/w.bin": 3}
    assert fs.listdir("nothing") == [] and fs.find("nothing") == {}
    with pytest.raises(FileNotFoundError):
        fs.read_bytes("refs/none.json")
    fs.remove("refs/a.json")
    fs.remove("refs/a.json")  # absent: no error
    assert not fs.exists("refs/a.json")
    fs.rmtree("artifacts/x")
    assert fs.find("artifacts") == {}


@pytest.mark.parametrize("url", ["memory", "s3"])
def test_conditional_replace_wins_once(url, request):
    base = f"memory://ws-{uuid.uuid4().hex}" if url == "memory" else request.getfixturevalue("s3")
    fs = open_fs(base)
    fs.write_bytes("locks/l.json", b"v1")
    _, tag = fs.read_with_etag("locks/l.json")
    assert fs.replace_if("locks/l.json", b"v2", tag)
    assert not fs.replace_if("locks/l.json", b"v3", tag)  # the version it named is gone
    assert fs.read_bytes("locks/l.json") == b"v2"
    assert fs.replace_if("locks/new.json", b"x", None) and not fs.replace_if("locks/new.json", b"y", None)


def test_transfers_in_parallel_with_sizes_kept(s3, tmp_path):
    fs = open_fs(s3)
    src = tmp_path / "src"
    for i in range(20):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"f{i}.bin").write_bytes(bytes([i]) * (1000 * i + 1))
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.bin"))
    fs.put_files((src / f, f"up/{f}") for f in files)
    fs.get_files((f"up/{f}", tmp_path / "down" / f) for f in files)
    assert all((tmp_path / "down" / f).read_bytes() == (src / f).read_bytes() for f in files)


def test_a_big_file_goes_up_in_parts_and_arrives_intact(s3, tmp_path):
    """Above 8 MB a file is uploaded multi-part (the object's ETag counts the parts) and comes back byte for byte;
    a move (the store's quarantine) copies it server-side."""
    import random

    import boto3

    big = tmp_path / "model.safetensors"
    big.write_bytes(random.Random(0).randbytes(20 * 2**20 + 5))
    fs = open_fs(s3 + "/ws")
    fs.put_files([(big, "artifacts/a/model.safetensors")])
    bucket = s3.split("://")[1]
    head = boto3.client("s3").head_object(Bucket=bucket, Key="ws/artifacts/a/model.safetensors")
    assert head["ETag"].strip('"').endswith("-3") and head["ContentLength"] == big.stat().st_size
    fs.get_files([("artifacts/a/model.safetensors", tmp_path / "down" / "m")])
    assert (tmp_path / "down" / "m").read_bytes() == big.read_bytes()
    fs.move("artifacts/a/model.safetensors", "quarantine/a/model.safetensors")
    assert not fs.exists("artifacts/a/model.safetensors")
    assert fs.read_bytes("quarantine/a/model.safetensors") == big.read_bytes()
    with pytest.raises(FileNotFoundError):
        fs.get_files([("artifacts/a/model.safetensors", tmp_path / "down" / "gone")])


def test_many_objects_are_listed_and_removed_past_one_page(s3):
    """Listings and batch deletes go past S3's 1000-key pages."""
    fs = open_fs(s3 + "/ws")
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: fs.write_bytes(f"many/d{i % 2}/{i:05d}", b"x" * (i % 7)), range(1100)))
    found = fs.find("many")
    assert len(found) == 1100 and found["d1/00013"].size == 13 % 7
    assert fs.listdir("many") == ["d0", "d1"] and len(fs.listdir("many/d0")) == 550
    fs.rmtree("many")
    assert fs.find("many") == {} and fs.listdir("") == []


def test_an_upload_to_a_missing_bucket_is_one_line(s3, tmp_path):
    (tmp_path / "f.bin").write_bytes(b"x")
    fs = open_fs(s3.replace("s3://b-", "s3://nosuch-") + "/ws")
    with pytest.raises(UserError, match=r"cannot upload .*the bucket does not exist"):
        fs.put_files([(tmp_path / "f.bin", "up/f.bin")])


def test_open_fs_picks_the_twin(tmp_path):
    assert isinstance(open_fs(tmp_path), LocalFS) and isinstance(open_fs(f"file://{tmp_path}"), LocalFS)
    assert isinstance(open_fs("memory://x"), ObjectFS) and isinstance(open_fs("s3://b/ws"), S3FS)


def test_a_missing_bucket_is_one_line(s3):
    fs = open_fs(s3.replace("s3://b-", "s3://nosuch-") + "/ws")
    with pytest.raises(UserError, match=r"workspace s3://nosuch-\w+/ws: the bucket 'nosuch-\w+' does not exist"):
        fs.check_root()


def test_one_client_per_environment_and_a_changed_endpoint_is_honoured(s3, monkeypatch, tmp_path):
    """Stores on the same backend share one client (a new one costs a session: ~0.1-0.2 s per Store on S3), but the
    client follows the environment: pointed at another server, a workspace sees that server's objects. The other
    server is a separate process (moto's servers in one process share their buckets)."""
    import socket
    import subprocess
    import sys
    import time

    import boto3

    first = open_fs(s3 + "/ws")
    first.write_bytes("refs/a.json", b"on the first server")
    assert open_fs(s3 + "/other").client is first.client
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    other = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
        for _ in range(100):
            try:
                client.create_bucket(Bucket=s3.split("://")[1])
                break
            except Exception:  # noqa: BLE001 — not listening yet
                time.sleep(0.1)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        second = open_fs(s3 + "/ws")
        assert second.client is not first.client and not second.exists("refs/a.json")
        second.write_bytes("refs/a.json", b"on the second server")
        (tmp_path / "w.bin").write_bytes(b"weights")
        second.put_files([(tmp_path / "w.bin", "up/w.bin")])  # the upload path follows the environment too
        assert second.read_bytes("up/w.bin") == b"weights" and not first.exists("up/w.bin")
        assert second.read_bytes("refs/a.json") == b"on the second server"
        assert first.read_bytes("refs/a.json") == b"on the first server"
    finally:
        other.kill()
        other.wait()


def test_a_concurrent_conditional_write_is_transient_and_a_lost_condition_is_not():
    """S3 answers 409 ConditionalRequestConflict while another conditional write to the key is in flight: asked
    again (retrying's backoff); a failed precondition (412) is an answer, and access denied is the user's to fix."""
    from botocore.exceptions import ClientError

    from alignpipe.pipeline.fs import classify

    def error(code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "m"}}, "PutObject")

    assert classify(error("ConditionalRequestConflict")) == "transient"
    assert classify(error("PreconditionFailed")) != "transient"
    assert classify(error("AccessDenied")).startswith("access denied")
