"""Scripted annotators: real HTTP clients (alignpipe.labeling.client) labeling a running page."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from alignpipe.labeling.client import PageClient, PageError
from alignpipe.labeling.db import LabelDB


def wait_for_page(work: Path, timeout: float = 120.0) -> tuple[str, Path]:
    """(url, db path) of the labeling job a stage started under `work` (its out dir's .work)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for db in work.glob("*/ckpt/labels.db"):
            url = LabelDB(db).setting("url")
            if url:
                return url, db
        time.sleep(0.05)
    raise TimeoutError(f"no labeling page under {work} within {timeout} s")


def label(url: str, token: str, decide: Callable[[dict], str], acked: list | None = None,
          stop: threading.Event | None = None, limit: int | None = None) -> int:
    """Judge pairs until none is left (or `stop`, or `limit`); `decide(pair) -> left|right|tie|skip`. Appends each
    acknowledged (annotator, pair, choice) to `acked`. Returns how many it judged."""
    client = PageClient(url, token)
    state = client.state()
    me, n = state["me"], 0
    pair = state["pair"]
    while pair is not None and not (stop and stop.is_set()) and (limit is None or n < limit):
        choice = decide(pair)
        reply = client.judge(pair["key"], choice)
        if acked is not None:
            acked.append((me, pair["key"], choice))
        n += 1
        pair = reply["pair"]
    client.close()
    return n


def label_until_down(url: str, token: str, decide: Callable[[dict], str], acked: list) -> None:
    """Label until the server goes away (a kill): a refused or dropped request ends the loop."""
    try:
        label(url, token, decide, acked)
    except (OSError, PageError):
        pass


def run_in_thread(fn: Callable, *args, **kwargs) -> tuple[threading.Thread, list]:
    """fn in a thread; the returned list gets its exception, if any."""
    errors: list = []

    def target() -> None:
        try:
            fn(*args, **kwargs)
        except BaseException as e:  # noqa: BLE001 — handed to the test
            errors.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, errors
