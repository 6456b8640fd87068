import hashlib
import json
import os

import pytest

from alignpipe.pipeline import store as store_mod
from alignpipe.pipeline.context import Checkpoints
from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.store import MANIFEST, SCHEMA_VERSION, Store, hash_tree, seal_stamp_ns

real_sha = store_mod.sha256_file


def staged(tmp_path, files, name="s"):
    d = tmp_path / name
    d.mkdir()
    for rel, text in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return d


META = {"kind": "model", "producer": {"stage": "sft"}, "inputs": {}, "params": {"lr": 1}}


def test_manifest_fields_and_content_id(tmp_path):
    store = Store(tmp_path / "ws").ensure()
    a = store.publish(staged(tmp_path, {"config.json": "{}", "sub/w.bin": "abc"}), META)
    m = json.loads((a.path / MANIFEST).read_text())
    assert m["id"] == a.id == a.path.name
    assert m["kind"] == "model" and m["producer"] == {"stage": "sft"} and m["params"] == {"lr": 1}
    assert m["schema_version"] == SCHEMA_VERSION and m["created"] > 0
    assert [(f["path"], f["size"]) for f in m["files"]] == [("config.json", 2), ("sub/w.bin", 3)]
    # the id depends on content only: the same files elsewhere hash to the same id
    assert hash_tree(staged(tmp_path, {"config.json": "{}", "sub/w.bin": "abc"}, "t"))[0] == a.id
    assert hash_tree(staged(tmp_path, {"config.json": "{}", "sub/w.bin": "abd"}, "u"))[0] != a.id


def test_publishing_identical_content_keeps_the_first(tmp_path):
    store = Store(tmp_path / "ws").ensure()
    a = store.publish(staged(tmp_path, {"x": "1"}, "a"), META)
    b = store.publish(staged(tmp_path, {"x": "1"}, "b"), {**META, "producer": {"stage": "other"}})
    assert a.id == b.id and b.producer == {"stage": "sft"} and store.ids() == [a.id]


def test_leftover_without_manifest_is_not_an_artifact(tmp_path):
    """A crash mid-rename can only leave a dir without manifest: it is invisible and replaced."""
    store = Store(tmp_path / "ws").ensure()
    s = staged(tmp_path, {"x": "1"})
    art_id = hash_tree(s)[0]
    (store.artifacts_dir / art_id).mkdir()
    (store.artifacts_dir / art_id / "x").write_text("partial")
    assert store.ids() == [] and not store.has(art_id)
    a = store.publish(s, META)
    assert store.verify(a.id) == []


def test_verify_finds_flipped_byte_missing_and_extra_files(tmp_path):
    store = Store(tmp_path / "ws").ensure()
    a = store.publish(staged(tmp_path, {"w.bin": "abcdef", "c.json": "{}"}), META)
    assert store.verify(a.id) == []
    data = bytearray((a.path / "w.bin").read_bytes())
    data[2] ^= 0x01
    (a.path / "w.bin").write_bytes(bytes(data))
    assert store.verify(a.id) == ["w.bin: content changed (sha256 mismatch)"]
    assert store.verify(a.id, level="size") == []  # sizes alone cannot see a flipped byte
    assert store.verify(a.id, level="stat") == ["w.bin: content changed (sha256 mismatch)"]  # its mtime moved
    (a.path / "c.json").unlink()
    (a.path / "extra").write_text("")
    assert store.verify(a.id) == ["c.json: missing", "w.bin: content changed (sha256 mismatch)",
                                  "extra: not in the manifest"]


def test_stat_check_rehashes_only_files_written_after_sealing_and_restamps_intact_ones(tmp_path, monkeypatch):
    store = Store(tmp_path / "ws").ensure()
    a = store.publish(staged(tmp_path, {"w.bin": "abcdef", "c.json": "{}"}), META)
    stamp = seal_stamp_ns(a.manifest["created"])
    assert {(a.path / f).stat().st_mtime_ns for f in ("w.bin", "c.json")} == {stamp}
    hashed = []
    monkeypatch.setattr(store_mod, "sha256_file", lambda p: hashed.append(p.name) or real_sha(p))
    assert store.verify(a.id, level="stat") == [] and hashed == []  # nothing touched since sealing: no hashing
    os.utime(a.path / "c.json", ns=(0, stamp + 5_000))  # a copy that did not keep mtimes
    assert store.verify(a.id, level="stat") == [] and hashed == ["c.json"]
    assert (a.path / "c.json").stat().st_mtime_ns == stamp  # intact: stamped again, cheap next time
    assert store.verify(a.id, level="stat") == [] and hashed == ["c.json"]


def test_a_manifest_edited_to_match_changed_files_no_longer_matches_its_id(tmp_path):
    store = Store(tmp_path / "ws").ensure()
    a = store.publish(staged(tmp_path, {"w.bin": "abcdef"}), META)
    (a.path / "w.bin").write_text("abcdeX")
    m = json.loads((a.path / MANIFEST).read_text())
    m["files"][0]["sha256"] = hashlib.sha256(b"abcdeX").hexdigest()
    (a.path / MANIFEST).write_text(json.dumps(m))
    assert store.verify(a.id) == [f"manifest.json: does not describe artifact {a.id[:12]} (its id or file list "
                                  "was edited)"]


def test_tags_prefixes_and_lookup(tmp_path):
    store = Store(tmp_path / "ws").ensure()
    a = store.publish(staged(tmp_path, {"x": "1"}), META)
    store.tag("best", a.id[:8])
    assert store.resolve_id("best") == a.id == store.resolve_id(a.id[:6])
    with pytest.raises(UserError, match="is no artifact id, id prefix, tag or stage.output"):
        store.resolve_id("zzzz")
    with pytest.raises(UserError, match="tag name"):
        store.tag("a/b", a.id)
    store.record("fp1", {"out": a.id}, "s")
    assert store.lookup("fp1") == {"out": a.id} and store.lookup("fp2") is None


def test_lineage_and_gc(tmp_path):
    store = Store(tmp_path / "ws").ensure()
    base = store.publish(staged(tmp_path, {"b": "1"}, "b"), {**META, "inputs": {"text": {"id": "e1",
                                                                                         "external": "/d.txt"}}})
    sft = store.publish(staged(tmp_path, {"s": "2"}, "s"), {**META, "inputs": {"base": {"id": base.id}}})
    stray = store.publish(staged(tmp_path, {"z": "3"}, "z"), META)
    store.record("fp-stray", {"out": stray.id}, "z")
    tree = store.lineage(sft.id)
    assert tree["inputs"]["base"]["id"] == base.id
    assert tree["inputs"]["base"]["inputs"]["text"] == {"id": "e1", "external": "/d.txt"}
    plan = store.gc({sft.id}, dry_run=True, busy_work=set())
    assert plan["artifacts"] == [stray.id] and plan["refs"] == ["fp-stray"] and store.has(stray.id)
    store.gc({sft.id}, dry_run=False, busy_work=set())
    assert set(store.ids()) == {base.id, sft.id} and store.lookup("fp-stray") is None


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    ck = Checkpoints(tmp_path / "ckpt", keep=2)
    assert ck.latest() is None
    for step in (1, 2, 3):
        ck.save(step, lambda d, s=step: (d / "s.txt").write_text(str(s)))
    assert ck.latest().step == 3 and (ck.latest().path / "s.txt").read_text() == "3"
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["step-000000002", "step-000000003"]

    def crash(d):
        (d / "s.txt").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        ck.save(4, crash)
    assert ck.latest().step == 3, "a checkpoint that failed mid-write must never be loaded"
    assert any(p.name.startswith(".tmp-4") for p in (tmp_path / "ckpt").iterdir())
    os.sync()
