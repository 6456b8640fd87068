"""The workspace lock across machines: a second run on a bucket workspace refuses (naming who holds it) or waits;
when the holder dies its lease expires and the waiting run takes over, saying whose lease expired."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml
from bucket_util import machine

from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.fs import open_fs
from alignpipe.pipeline.lease import EXCLUSIVE, ObjectLease


def slow_spec(tmp_path, ws):
    spec = {"name": "slow", "workspace": ws, "stages": {"s": {"uses": "teststages:sleepy", "params": {"seconds": 30}}}}
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_second_run_refuses_then_waits_out_a_dead_holders_lease(s3, tmp_path):
    spec = slow_spec(tmp_path, s3 + "/ws")
    env_a = {**machine(tmp_path, "a"), "ALIGNPIPE_LEASE_TTL": "3"}
    a = subprocess.Popen([sys.executable, "-m", "alignpipe", "run", str(spec), "-q"], env=env_a,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fs = open_fs(s3 + "/ws")
    deadline = time.time() + 60
    while not fs.exists(EXCLUSIVE) or not json.loads(fs.read_bytes(EXCLUSIVE))["holder"].startswith("run 2"):
        assert a.poll() is None and time.time() < deadline  # the lease, then the run's id in it
        time.sleep(0.05)
    b = subprocess.run([sys.executable, "-m", "alignpipe", "run", str(spec), "-q"], env=machine(tmp_path, "b"),
                       capture_output=True, text=True, timeout=60)
    assert b.returncode == 2 and "Traceback" not in b.stderr
    assert re.search(rf"workspace is in use by run \d{{8}}-\d{{6}}-\w+ \(pid {a.pid} on ", b.stderr)
    assert "pass --wait to queue behind it" in b.stderr
    time.sleep(4)  # a alive: its heartbeat keeps renewing the 3 s lease
    assert subprocess.run([sys.executable, "-m", "alignpipe", "run", str(spec), "-q"], env=machine(tmp_path, "b"),
                          capture_output=True, text=True, timeout=60).returncode == 2
    a.send_signal(signal.SIGKILL)
    a.wait()
    t0 = time.time()
    c = subprocess.run([sys.executable, "-m", "alignpipe", "run", str(spec), "--wait"], env=machine(tmp_path, "c"),
                       capture_output=True, text=True, timeout=120)
    assert c.returncode == 0, c.stdout + c.stderr
    assert re.search(rf"the workspace lease of run \S+ \(pid {a.pid} on \S+\) expired at ", c.stdout)
    assert time.time() - t0 >= 30  # it ran the stage after taking over
    assert not fs.exists(EXCLUSIVE)  # released at the end


def test_only_one_of_two_racing_takers_wins_an_expired_lease(s3):
    fs = open_fs(s3 + "/ws")
    fs.write_bytes(EXCLUSIVE, b'{"holder": "run pid 1 on gone", "token": "t", "expires": 0}')
    first = ObjectLease(fs, ttl=30).acquire()
    try:
        with pytest.raises(UserError, match="workspace is in use by run pid"):
            ObjectLease(fs, ttl=30).acquire()
        assert "the workspace lease of run pid 1 on gone expired" in first.notes[0]
    finally:
        first.release()
    assert not fs.exists(EXCLUSIVE)


def test_shared_holders_and_an_exclusive_one_exclude_each_other(s3):
    fs = open_fs(s3 + "/ws")
    tasks = [ObjectLease(fs, ttl=30).acquire(shared=True) for _ in range(2)]  # platform tasks side by side
    with pytest.raises(UserError, match="workspace is in use"):
        ObjectLease(fs, ttl=30).acquire()
    for t in tasks:
        t.release()
    run = ObjectLease(fs, ttl=30).acquire()
    with pytest.raises(UserError, match="workspace is in use"):
        ObjectLease(fs, ttl=30).acquire(shared=True)
    run.release()
    assert fs.find("locks") == {}
