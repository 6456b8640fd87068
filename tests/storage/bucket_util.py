"""Helpers of the bucket-workspace tests."""

from __future__ import annotations

import os
import uuid

SECRET = "s3cr3t-" + uuid.uuid4().hex  # the secret key the tests use: grepped for in every output and stored byte


def machine(tmp_path, name: str) -> dict[str, str]:
    """The environment of another 'machine': its own cache and state (no shared disk with the others)."""
    return {**os.environ, "ALIGNPIPE_CACHE": str(tmp_path / f"machine-{name}")}
