"""Read datasets into lists of dicts: JSON lines, a JSON array, or Parquet (when pyarrow is installed)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from alignpipe.data.errors import DataError


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records of a .jsonl/.json/.parquet file, each a dict. Blank JSONL lines are ignored."""
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), None, None, "file not found", "check the input path")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path)
    if suffix == ".json":
        return _read_json_array(path)
    if suffix in (".jsonl", ".ndjson"):
        return _read_jsonl(path)
    raise DataError(str(path), None, None, f"unsupported file type {suffix!r}", "use .jsonl, .json or .parquet")


def _decode(path: Path, raw: bytes, line: int | None) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        where = f"line {line}, " if line is not None else ""
        raise DataError(
            str(path), None, None, f"{where}byte {e.start} is not valid UTF-8",
            "re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 in > out`)",
        ) from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            text = _decode(path, raw, line_no).strip()
            if not text:
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise DataError(str(path), len(records), None, f"line {line_no} is not valid JSON ({e.msg})",
                                "write one JSON object per line") from None
            if not isinstance(obj, dict):
                raise DataError(str(path), len(records), None, f"line {line_no} is a {type(obj).__name__}, not an "
                                "object", "write one JSON object per line") from None
            records.append(obj)
    return records


def _read_json_array(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(_decode(path, path.read_bytes(), None))
    except json.JSONDecodeError as e:
        raise DataError(str(path), None, None, f"not valid JSON ({e.msg} at line {e.lineno})",
                        "fix the JSON syntax, or use JSON lines (.jsonl)") from None
    if not isinstance(data, list):
        raise DataError(str(path), None, None, f"top level is a {type(data).__name__}, not a list of records",
                        "store a JSON array of objects, or use JSON lines (.jsonl)")
    for i, obj in enumerate(data):
        if not isinstance(obj, dict):
            raise DataError(str(path), i, None, f"record is a {type(obj).__name__}, not an object",
                            "make every array element a JSON object")
    return data


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(str(path), None, None, "reading Parquet needs pyarrow, which is not installed",
                        "`pip install pyarrow`, or convert the file to JSON lines") from None
    try:
        return pq.read_table(path).to_pylist()
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError; a damaged file an OSError
        raise DataError(str(path), None, None, f"not a readable Parquet file ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''})", "write it again, or convert it to JSON lines"
                        ) from None


def write_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]]) -> int:
    """Write records as UTF-8 JSON lines (atomically: temp file + rename); returns the count."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n
