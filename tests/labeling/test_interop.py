"""Label Studio and Argilla: pairs exported in their import formats, their exports imported back as judgments
(literal files in each tool's export format), through the real CLI."""

import json
from pathlib import Path

from labeling_util import cli, make_db

from alignpipe.labeling import interop

DATA = Path(__file__).parent / "data"


def job(tmp_path):
    db = make_db(tmp_path / "labels.db", n=3, overlap=2)
    return db, tmp_path / "labels.db"


def test_label_studio_export_then_its_annotations_come_back_as_judgments(tmp_path):
    db, path = job(tmp_path)
    r = cli("label", "export", "--format", "label-studio", "-o", tmp_path / "tasks.json", "--db", path)
    assert r.returncode == 0, r.stderr
    tasks = json.loads((tmp_path / "tasks.json").read_text())
    assert [t["data"]["pair"] for t in tasks] == ["0:0:1", "1:0:1", "2:0:1"]
    for t in tasks:  # the order shown is randomized per pair and travels with it
        d = t["data"]
        assert (d["left"], d["right"]) == ((f"a{d['pair'][0]}", f"b{d['pair'][0]}") if d["shown"] == "ab"
                                           else (f"b{d['pair'][0]}", f"a{d['pair'][0]}"))
    assert "<Choices name=\"preference\"" in (tmp_path / "tasks.label_config.xml").read_text()

    r = cli("label", "import", DATA / "label_studio_export.json", "--format", "label-studio", "--db", path)
    assert r.returncode == 0, r.stderr
    assert "4 judgments added, 0 already there, 1 for pairs not in this job" in r.stdout
    got = {(j["pair"], j["annotator"]): (j["choice"], j["shown"], j["dwell"], j["source"]) for j in db.judgments()}
    assert got == {("0:0:1", "label-studio:1"): ("b", "ba", 6.5, "label-studio"),  # "A" = left = b when shown ba
                   ("0:0:1", "label-studio:bo@example.com"): ("tie", "ba", 3.0, "label-studio"),
                   ("1:0:1", "label-studio:1"): ("b", "ab", 2.0, "label-studio"),  # Pairwise "right"
                   ("1:0:1", "label-studio:2"): ("skip", "ab", 1.0, "label-studio")}  # a cancelled task
    again = cli("label", "import", DATA / "label_studio_export.json", "--format", "label-studio", "--db", path)
    assert "0 judgments added, 4 already there" in again.stdout and len(db.judgments()) == 4


def test_argilla_export_then_its_responses_come_back_as_judgments(tmp_path):
    db, path = job(tmp_path)
    assert cli("label", "export", "-f", "argilla", "-o", tmp_path / "records.json", "--db", path).returncode == 0
    records = json.loads((tmp_path / "records.json").read_text())
    assert [(r["id"], sorted(r["fields"])) for r in records][0] == ("0:0:1", ["prompt", "response_a", "response_b"])
    assert all(r["metadata"]["shown"] in ("ab", "ba") and r["metadata"]["pair"] == r["id"] for r in records)

    r = cli("label", "import", DATA / "argilla_records.json", "-f", "argilla", "--db", path)
    assert r.returncode == 0 and "3 judgments added" in r.stdout, r.stdout + r.stderr
    got = {(j["pair"], j["annotator"]): j["choice"] for j in db.judgments()}
    assert got == {("0:0:1", "argilla:6f3c1a52-0d3e-4c3b-9a59-0b1e3b1c2d4e"): "b",
                   ("0:0:1", "argilla:91aa7e10-5b6c-4d0f-8e2a-7c9d1f3a5b6c"): "a",
                   ("2:0:1", "argilla:6f3c1a52-0d3e-4c3b-9a59-0b1e3b1c2d4e"): "b"}  # "A" shown ba -> b


def test_exported_pairs_are_only_those_still_needing_votes_and_judgments_round_trip(tmp_path):
    db, path = job(tmp_path)
    db.judge("x", "0:0:1", "left")
    db.judge("y", "0:0:1", "right")
    records = interop.to_argilla(db.pairs(pending_only=True), seed=0)
    assert [r["id"] for r in records] == ["1:0:1", "2:0:1"]
    assert cli("label", "export", "-f", "judgments", "-o", tmp_path / "j.jsonl", "--db", path).returncode == 0
    other, other_path = make_db(tmp_path / "other.db", n=3, overlap=2), tmp_path / "other.db"
    r = cli("label", "import", tmp_path / "j.jsonl", "-f", "judgments", "--db", other_path)
    assert r.returncode == 0 and "2 judgments added" in r.stdout
    assert [(j["pair"], j["annotator"], j["choice"]) for j in other.judgments()] == [
        (j["pair"], j["annotator"], j["choice"]) for j in db.judgments()]


def test_bad_files_are_refused_with_one_line_naming_the_file(tmp_path):
    _, path = job(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"data": {"prompt": "p"}, "annotations": []}]))
    r = cli("label", "import", bad, "-f", "label-studio", "--db", path)
    assert r.returncode == 2 and "bad.json (label-studio): task 0 data: needs the 'pair' and 'shown'" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli("label", "import", bad, "-f", "csv", "--db", path)
    assert r.returncode == 2 and "--format 'csv': expected label-studio | argilla or judgments" in r.stderr
    r = cli("label", "status", "--db", tmp_path / "nothing.db")
    assert r.returncode == 2 and "no labeling job there" in r.stderr
