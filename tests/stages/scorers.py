"""Scoring functions for judge tests (importable as `scorers:...` from this directory)."""

import os
from pathlib import Path


def length(responses):
    return [float(len(r)) for r in responses]


def by_prompt(responses, prompts):
    """Uses the prompt too: prefers responses that repeat the prompt's first word."""
    return [float(str(p).split()[0] in r) for r, p in zip(responses, prompts, strict=True)]


def flaky_length(responses):
    """Like length(), but fails on its second call while ALIGNPIPE_TEST_FAIL names an existing file."""
    marker = os.environ.get("ALIGNPIPE_TEST_FAIL")
    if marker:
        calls = Path(marker + ".calls")
        n = int(calls.read_text()) + 1 if calls.exists() else 1
        calls.write_text(str(n))
        if n == 2 and Path(marker).exists():
            raise RuntimeError("judge crashed")
    return length(responses)
