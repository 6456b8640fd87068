"""The local cache of a bucket's artifacts: a fill is re-hashed (a damaged remote copy is refused), the cache
stays within its size limit by evicting the least recently used entries, and never one a stage is reading."""

from __future__ import annotations

import os
import time

import pytest

from alignpipe.pipeline.cache import ArtifactCache
from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.fs import open_fs
from alignpipe.pipeline.store import MANIFEST, Store


def published(s3, tmp_path, n, size=1000):
    store = Store(s3 + "/ws")
    ids = []
    for i in range(n):
        d = tmp_path / f"s{i}"
        d.mkdir()
        (d / "data.bin").write_bytes(bytes([i]) * size)
        ids.append(store.publish(d, {"kind": "dataset", "producer": {"stage": f"s{i}"}}).id)
    return store, ids


def test_a_fill_is_rehashed_and_a_damaged_remote_copy_refused(s3, tmp_path, monkeypatch):
    store, (art,) = published(s3, tmp_path, 1)
    monkeypatch.setenv("ALIGNPIPE_CACHE", str(tmp_path / "other-machine"))
    other = Store(s3 + "/ws")
    open_fs(s3 + "/ws").write_bytes(f"artifacts/{art}/data.bin", b"X" * 1000)  # same size, other bytes
    with pytest.raises(UserError, match=rf"the downloaded files hash to \w{{12}}, not to the artifact id; the remote "
                                        rf"copy is damaged: run `alignpipe verify {art[:12]}`"):
        other.local_dir(art)
    assert not other.cache.has(art)


def test_eviction_keeps_the_cache_within_its_limit_least_recently_used_first(s3, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNPIPE_CACHE", str(tmp_path / "publisher"))
    store, ids = published(s3, tmp_path, 4, size=1000)
    cache = ArtifactCache(tmp_path / "reader", limit=10**9)
    cache.fetch(store, ids[0])
    (entry,) = [size for _, size, _ in cache.entries()]
    cache.limit = 2 * entry + entry // 2  # room for two entries
    cache.fetch(store, ids[1])
    os.utime(cache.marker(ids[0]), (time.time() - 100, time.time() - 100))  # used longest ago
    with cache.using([ids[1]]):
        cache.fetch(store, ids[2])  # over the limit: ids[0] goes (the least recent); ids[1] is in use
    assert [cache.has(i) for i in ids[:3]] == [False, True, True]
    with cache.using([ids[1], ids[2]]):
        cache.fetch(store, ids[3])  # both others in use: over the limit for now rather than pulled away
    assert all(cache.has(i) for i in ids[1:])
    assert (cache.path(ids[3]) / MANIFEST).is_file()
