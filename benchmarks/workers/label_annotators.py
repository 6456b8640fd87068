"""Scripted annotators for the labeling load benchmark: one thread per token, each a real HTTP client
(alignpipe.labeling.client) judging the pair the page hands it as fast as the page answers, until a deadline.

    python benchmarks/workers/label_annotators.py URL TOKENS.json SECONDS [THINK_MIN_S THINK_MAX_S]
(THINK: a pause drawn uniformly between the two before each judgment, like a person reading; default none)
prints one JSON object: every submit latency (ms) and every acknowledged (annotator, pair), plus failures.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time

from alignpipe.labeling.client import PageClient, PageError

CHOICES = ("left", "right", "tie", "left", "right", "skip")


def annotate(url: str, token: str, deadline: float, think: tuple[float, float], out: dict) -> None:
    client = PageClient(url, token)
    rng = random.Random(token)
    latencies, acked, errors = [], [], []
    state = client.state()
    me, pair, n = state["me"], state["pair"], 0
    while pair is not None and time.monotonic() < deadline:
        if think[1] > 0:
            time.sleep(rng.uniform(*think))
        t0 = time.perf_counter()
        try:
            reply = client.judge(pair["key"], CHOICES[n % len(CHOICES)])
        except (OSError, PageError) as e:
            errors.append(str(e))
            break
        latencies.append((time.perf_counter() - t0) * 1000)
        acked.append([me, pair["key"]])
        pair, n = reply["pair"], n + 1
    client.close()
    out[me] = {"latencies_ms": latencies, "acked": acked, "errors": errors, "ran_out": pair is None}


def main() -> None:
    url, tokens_path, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    think = (float(sys.argv[4]), float(sys.argv[5])) if len(sys.argv) > 5 else (0.0, 0.0)
    tokens = json.loads(open(tokens_path).read())
    deadline = time.monotonic() + seconds
    out: dict = {}
    threads = [threading.Thread(target=annotate, args=(url, t, deadline, think, out)) for t in tokens]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"wall_s": time.monotonic() - started, "annotators": out}))


if __name__ == "__main__":
    main()
