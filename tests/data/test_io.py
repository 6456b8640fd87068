import json
import sys

import pytest

from alignpipe.data import DataError, read_records, write_jsonl


def test_jsonl_roundtrip_ignores_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    assert write_jsonl(path, [{"prompt": "é", "completion": " x"}, {"prompt": "b", "completion": " y"}]) == 2
    path.write_text(path.read_text(encoding="utf-8") + "\n\n", encoding="utf-8")
    assert read_records(path) == [{"prompt": "é", "completion": " x"}, {"prompt": "b", "completion": " y"}]


def test_json_array(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"text": "a"}, {"text": "b"}]))
    assert read_records(path) == [{"text": "a"}, {"text": "b"}]
    path.write_text(json.dumps([{"text": "a"}, 3]))
    with pytest.raises(DataError, match=r"d\.json: record 1: record is a int, not an object"):
        read_records(path)


def test_non_utf8_names_file_line_and_fix(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"latin\.jsonl: line 2, byte 13 is not valid UTF-8\. Fix: re-encode"):
        read_records(path)


def test_invalid_json_and_non_object_lines(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl: record 1: line 2 is not valid JSON .*Fix: write one JSON"):
        read_records(path)
    path.write_text('["a"]\n')
    with pytest.raises(DataError, match="line 1 is a list, not an object"):
        read_records(path)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_records(tmp_path / "nope.jsonl")
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"unsupported file type '\.csv'. Fix: use \.jsonl, \.json or \.parquet"):
        read_records(tmp_path / "d.csv")


def test_parquet_without_pyarrow_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # importing it now raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    with pytest.raises(DataError, match=r"d\.parquet: reading Parquet needs pyarrow.*Fix: `pip install pyarrow`"):
        read_records(tmp_path / "d.parquet")
