"""The judgments store on a real SQLite file: durability, one judgment per annotator and pair, overlap, undo."""

import os
import subprocess
import sys
import time

import pytest
from labeling_util import make_db

from alignpipe.labeling.db import Conflict, LabelDB, display_order


def test_a_judgment_is_stored_once_in_the_pairs_own_terms_and_survives_reopening(tmp_path):
    db = make_db(tmp_path / "labels.db")
    page = db.next_pair("ann")
    shown = display_order(0, page["key"], "ann")
    assert (page["left"], page["right"]) == ((f"a{page['key'][0]}", f"b{page['key'][0]}") if shown == "ab"
                                              else (f"b{page['key'][0]}", f"a{page['key'][0]}"))
    jid, dup = db.judge("ann", page["key"], "left", reason="clearer")
    assert not dup and db.judge("ann", page["key"], "left") == (jid, True)  # a retried submission
    with pytest.raises(Conflict, match="already judged .* undo it first"):
        db.judge("ann", page["key"], "right")
    db.close()
    again = LabelDB(tmp_path / "labels.db")
    [j] = again.judgments()
    assert (j["annotator"], j["choice"], j["shown"], j["reason"]) == ("ann", shown[0], shown, "clearer")
    assert j["dwell"] is not None and j["dwell"] >= 0 and j["source"] == "page"
    assert again.add_pairs([("0:0:1", "changed", "x", "y")]) == 0  # known pairs are kept as they were
    assert again.pair("0:0:1")["prompt"] == "prompt 0"


def test_display_order_is_balanced_and_per_annotator():
    orders = [display_order(0, f"{i}:0:1", "ann") for i in range(400)]
    assert 160 < orders.count("ab") < 240
    assert orders != [display_order(0, f"{i}:0:1", "other") for i in range(400)]


def test_overlap_hands_each_pair_to_k_different_annotators(tmp_path):
    db = make_db(tmp_path / "labels.db", n=2, overlap=2)
    x, y, z = (db.next_pair(w)["key"] for w in ("x", "y", "z"))
    assert x == y != z  # x and y share the first pair (leased twice = its overlap), z starts the second
    assert db.next_pair("x")["key"] == x  # a reload shows the open pair again
    db.judge("x", x, "left")
    db.judge("y", y, "right")
    with pytest.raises(Conflict, match="already has its 2 judgment"):
        db.judge("z", x, "tie")
    db.judge("z", z, "skip")  # a skip is not a vote: the pair still needs two
    assert db.next_pair("z") is None  # z has judged or skipped everything open to them
    assert db.next_pair("x")["key"] == z
    p = db.progress("z")
    assert (p["pairs"], p["complete"], p["votes"], p["target"], p["mine"], p["my_skips"]) == (2, 1, 2, 4, 0, 1)


def test_expired_leases_free_their_pairs(tmp_path):
    db = make_db(tmp_path / "labels.db", n=1)
    db.configure(lease_seconds=0.05)
    assert db.next_pair("x") is not None and db.next_pair("y") is None
    time.sleep(0.1)
    assert db.next_pair("y") is not None


def test_undo_removes_only_my_latest_judgment(tmp_path):
    db = make_db(tmp_path / "labels.db", n=3, overlap=2)
    first = db.next_pair("me")["key"]
    db.judge("me", first, "left")
    second = db.next_pair("me")["key"]
    db.judge("me", second, "tie")
    db.judge("other", first, "right")
    out = db.undo("me")
    assert out["undone"] == {"pair": second, "choice": "tie"} and out["pair"]["key"] == second
    assert db.next_pair("me")["key"] == second  # shown again
    assert [(j["annotator"], j["pair"]) for j in db.judgments()] == [("me", first), ("other", first)]
    assert db.pair(second)["votes"] == 0 and db.pair(first)["votes"] == 2
    db.undo("me")
    with pytest.raises(Conflict, match="nothing to undo"):
        db.undo("me")
    assert [j["annotator"] for j in db.judgments()] == ["other"]


def test_finishing_freezes_judgments(tmp_path):
    db = make_db(tmp_path / "labels.db", n=2)
    assert not db.finish_if_complete()
    for who in ("x", "y"):
        db.judge(who, db.next_pair(who)["key"], "left")
    assert db.finish_if_complete() and db.finished() == "complete"
    assert db.finish("operator") == "complete"  # the first reason stays
    with pytest.raises(Conflict, match="labeling is finished"):
        db.undo("x")
    with pytest.raises(Conflict, match="labeling is finished"):
        db.judge("z", "0:0:1", "left")
    assert db.next_pair("z") is None


def test_tokens_are_stored_hashed_links_are_one_time_and_reinvites_replace(tmp_path):
    db = make_db(tmp_path / "labels.db")
    token = db.invite("alice")
    assert token not in (tmp_path / "labels.db").read_bytes().decode("latin-1")
    assert db.bearer(token).name == "alice" and not db.bearer(token).admin
    sid, who = db.login(token)
    assert db.session(sid) == who and who.csrf
    new = db.invite("alice")
    assert db.bearer(token) is None and db.session(sid) is None and db.bearer(new).name == "alice"
    link = db.one_time_link()
    sid, who = db.login(link)
    assert who.admin and who.name == "admin" and db.login(link) is None
    assert db.bearer(link) is None  # a login link is not a bearer token
    with pytest.raises(ValueError, match="annotator name"):
        db.invite("<script>")


def test_import_respects_overlap_and_uniqueness(tmp_path):
    db = make_db(tmp_path / "labels.db", n=2)
    rows = [{"pair": "0:0:1", "annotator": "ls:1", "choice": "a", "shown": "ab"},
            {"pair": "0:0:1", "annotator": "ls:1", "choice": "a", "shown": "ab"},
            {"pair": "0:0:1", "annotator": "ls:2", "choice": "b", "shown": "ba"},
            {"pair": "9:0:1", "annotator": "ls:1", "choice": "b", "shown": "ab"}]
    assert db.import_judgments(rows, "label-studio") == {"added": 1, "duplicate": 1, "unknown_pair": 1,
                                                         "refused": 1}
    with pytest.raises(ValueError, match="choice must be one of"):
        db.import_judgments([{"pair": "1:0:1", "annotator": "x", "choice": "left", "shown": "ab"}], "x")


WRITER = """
import sys
from alignpipe.labeling.db import LabelDB
db = LabelDB(sys.argv[1])
for i in range(100000):
    who = f"w{i % 7}"
    page = db.next_pair(who)
    if page is None:
        break
    jid, _ = db.judge(who, page["key"], "left")
    print(who, page["key"], flush=True)  # acknowledged: committed before this line
"""


def test_kill_9_loses_no_acknowledged_judgment(tmp_path):
    db = make_db(tmp_path / "labels.db", n=5000)
    db.close()
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "labels.db")], stdout=subprocess.PIPE,
                            text=True)
    acked = []
    while len(acked) < 200:
        acked.append(tuple(proc.stdout.readline().split()))
    os.kill(proc.pid, 9)
    acked += [tuple(line.split()) for line in proc.stdout.read().splitlines()]
    proc.wait()
    stored = [(j["annotator"], j["pair"]) for j in LabelDB(tmp_path / "labels.db").judgments()]
    assert set(acked) <= set(stored) and len(stored) == len(set(stored))
    assert len(stored) - len(acked) <= 1  # at most the one committed but not yet printed


def test_progress_counters_stay_equal_to_a_recount(tmp_path):
    db = make_db(tmp_path / "labels.db", n=5, overlap=2)
    for who, pair, choice in [("x", "0:0:1", "left"), ("y", "0:0:1", "tie"), ("x", "1:0:1", "skip"),
                              ("z", "1:0:1", "right"), ("x", "2:0:1", "left")]:
        db.judge(who, pair, choice)
    db.undo("x")
    db.import_judgments([{"pair": "3:0:1", "annotator": "w", "choice": "a", "shown": "ab"}], "judgments")
    recount = {p["key"]: p["votes"] for p in db.pairs()}
    p = db.progress()
    assert (p["pairs"], p["votes"], p["complete"]) == (5, sum(recount.values()), 1) == (5, 4, 1)
