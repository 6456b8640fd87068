"""Cache keys. fingerprint = sha256(stage type + implementation version + canonical params + input ids + seed).

Everything else (resources, retries, timeout, executor, log level, workspace path) is deliberately left out:
changing those must not rerun anything.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(obj: Any) -> str:
    """One byte-exact text per value: sorted keys, no whitespace, no NaN."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def fingerprint(uses: str, version: str, params: dict[str, Any], inputs: dict[str, str], seed: int) -> str:
    payload = {"uses": uses, "version": version, "params": params, "inputs": inputs, "seed": seed}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def derive_seed(pipeline_seed: int, stage_name: str) -> int:
    """A stage's own seed, stable under adding or removing other stages."""
    h = hashlib.sha256(f"{pipeline_seed}:{stage_name}".encode()).hexdigest()
    return int(h[:8], 16) % (2**31 - 1)
