"""Torch-free checks of a HF model directory's files, run before transformers reads them: a garbled config.json
or a truncated safetensors file is named here instead of surfacing as a deep traceback from the loader."""

from __future__ import annotations

import json
import struct
from pathlib import Path

JSON_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
              "special_tokens_map.json", "model.safetensors.index.json")


def model_file_problems(path: Path) -> list[str]:
    """Problems with the files of HF model directory `path`, each naming the file; [] if it looks loadable."""
    problems = [p for name in JSON_FILES if (path / name).is_file() for p in _json_problems(path / name)]
    if not problems and not isinstance(json.loads((path / "config.json").read_text(encoding="utf-8")), dict):
        problems.append(f"{path / 'config.json'}: expected a JSON object (model_type, sizes, ...)")
    for f in sorted(path.glob("*.safetensors")):
        problems.extend(safetensors_problems(f))
    index = path / "model.safetensors.index.json"
    if index.is_file() and not problems:
        shards = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
        problems.extend(f"{index}: names shard {s!r}, which is missing" for s in sorted(shards)
                        if not (path / s).is_file())
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        problems.append(f"{path}: no weights (*.safetensors or pytorch_model.bin)")
    return problems


def _json_problems(f: Path) -> list[str]:
    try:
        json.loads(f.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return [f"{f}: not UTF-8 text; restore it from where the model was saved"]
    except ValueError as e:
        return [f"{f}: not valid JSON ({e}); restore it from where the model was saved"]
    return []


def safetensors_problems(f: Path) -> list[str]:
    """A safetensors file is an 8-byte header length, a JSON header with each tensor's byte range, then the data:
    check that the header parses and the file is as long as the ranges say (a truncated copy is not)."""
    size = f.stat().st_size
    with open(f, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return [f"{f}: truncated ({size} bytes, shorter than a safetensors header); copy it again"]
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return [f"{f}: truncated or not safetensors (header says {n} header bytes, the file has {size}); copy "
                    "it again"]
        try:
            header = json.loads(fh.read(n))
        except ValueError:
            return [f"{f}: garbled safetensors header (not JSON); copy it again"]
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)
            and isinstance(v.get("data_offsets"), list) and len(v["data_offsets"]) == 2]
    expected = 8 + n + max(ends, default=0)
    if size != expected:
        return [f"{f}: {'truncated' if size < expected else 'has trailing bytes'} ({size} bytes, its header "
                f"describes {expected}); copy it again"]
    return []
