"""`judge: openai`: any OpenAI-compatible chat-completions endpoint compares two responses (stdlib HTTP only).

Each pair is asked in both orders (a then b, b then a) with a one-token answer at temperature 0. With
`logprobs`, P("A") vs P("B") comes from the answer token's top log-probabilities (variants like "A" and " A"
summed); without them, or when neither letter is among them, the answer's text decides (A -> 1, B -> 0) and
anything else is unparseable (the pair abstains, counted as a tie). P(a better) averages the two orders.

The client keeps to `requests_per_minute` across its threads, keeps at most `concurrency` requests in flight,
and retries 429, 5xx, time-outs and dropped connections with exponential backoff (honouring Retry-After) up to
`max_retries` times; other HTTP errors stop the stage with the endpoint's message. The API key comes from the
environment variable `api_key_env` and never enters params, artifacts or logs. Every answer is kept (raw text,
top log-probabilities, token usage, attempts), and the summary totals requests, tokens and cost.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from alignpipe.judges import JudgeReport, Judgment, PairQuery
from alignpipe.labeling.params import OpenAIParams, fill
from alignpipe.pipeline.errors import StageFailed

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_BACKOFF_S = 30.0


class EndpointUnavailable(RuntimeError):
    """Retries exhausted: not the config's fault, so the stage fails with exit 1 and the runner may retry it
    (judgments made so far are checkpointed)."""


class RateLimiter:
    """At most `per_minute` starts per minute, evenly spaced, shared by every thread."""

    def __init__(self, per_minute: float):
        self.interval = 60.0 / per_minute
        self.next = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            start = max(now, self.next)
            self.next = start + self.interval
        time.sleep(max(0.0, start - now))


def letter_probability(choice: dict[str, Any]) -> float | None:
    """P("A") among "A"/"B" from a choice's logprobs, else from its text; None when neither says A or B."""
    content = ((choice.get("logprobs") or {}).get("content") or [{}])[0]
    mass = {"A": 0.0, "B": 0.0}
    for entry in content.get("top_logprobs") or []:
        letter = str(entry.get("token", "")).strip().upper()
        if letter in mass:
            mass[letter] += math.exp(entry["logprob"])
    if mass["A"] + mass["B"] > 0:
        return mass["A"] / (mass["A"] + mass["B"])
    text = str((choice.get("message") or {}).get("content") or "").strip().upper()
    return {"A": 1.0, "B": 0.0}.get(text[:1])


class OpenAIJudge:
    def __init__(self, params: OpenAIParams, stage: str):
        self.p, self.stage = params, stage
        self.key = os.environ.get(params.api_key_env)
        if not self.key:
            raise StageFailed(f"stage {stage!r} params.openai.api_key_env: the environment variable "
                              f"{params.api_key_env} is not set; export the endpoint's API key in it")
        self.url = params.base_url.rstrip("/") + "/chat/completions"
        self.limiter = RateLimiter(params.requests_per_minute)

    def describe(self) -> dict[str, Any]:
        return {"type": "openai", "base_url": self.p.base_url, "model": self.p.model, "both_orders": True}

    def report(self) -> JudgeReport:
        return JudgeReport()  # raw answers and usage travel with each judgment (summed by the stage)

    # -- one request, with retries ---------------------------------------------------------------------------------
    def _post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """(response JSON, attempts)."""
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.key}"}
        for attempt in range(1, self.p.max_retries + 2):
            self.limiter.wait()
            wait = min(MAX_BACKOFF_S, 0.5 * 2 ** (attempt - 1))
            try:
                req = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.p.timeout) as resp:
                    return json.loads(resp.read()), attempt
            except urllib.error.HTTPError as e:
                detail = e.read().decode(errors="replace")[:300]
                if e.code not in RETRY_STATUS:
                    raise StageFailed(f"stage {self.stage!r}: {self.url} answered HTTP {e.code}: {detail} "
                                      f"(check params.openai.base_url, model, and the key in "
                                      f"${self.p.api_key_env})") from None
                why = f"HTTP {e.code}"
                retry_after = e.headers.get("Retry-After")
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    wait = min(MAX_BACKOFF_S, float(retry_after))
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                why = str(getattr(e, "reason", e))
            if attempt > self.p.max_retries:
                raise EndpointUnavailable(f"stage {self.stage!r}: {self.url} failed {attempt} times (last: {why}); "
                                          "check that the endpoint is up, or raise params.openai.max_retries")
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _ask(self, prompt: Any, first: str, second: str) -> dict[str, Any]:
        messages = ([{"role": "system", "content": self.p.system}] if self.p.system else []) + [
            {"role": "user", "content": fill(self.p.template, prompt, first, second)}]
        body: dict[str, Any] = {"model": self.p.model, "messages": messages, "max_tokens": 1, "temperature": 0}
        if self.p.logprobs:
            body.update(logprobs=True, top_logprobs=20)
        resp, attempts = self._post(body)
        choice = (resp.get("choices") or [{}])[0]
        usage = resp.get("usage") or {}
        return {"answer": (choice.get("message") or {}).get("content"), "p_first": letter_probability(choice),
                "top_logprobs": ((choice.get("logprobs") or {}).get("content") or [{}])[0].get("top_logprobs"),
                "usage": {"requests": attempts, "prompt_tokens": usage.get("prompt_tokens", 0),
                          "completion_tokens": usage.get("completion_tokens", 0)}}

    def _pair(self, q: PairQuery) -> Judgment:
        ab, ba = self._ask(q.prompt, q.a, q.b), self._ask(q.prompt, q.b, q.a)
        usage = {k: ab["usage"][k] + ba["usage"][k] for k in ab["usage"]}
        if self.p.input_price_per_million or self.p.output_price_per_million:
            usage["cost_usd"] = (usage["prompt_tokens"] * self.p.input_price_per_million
                                 + usage["completion_tokens"] * self.p.output_price_per_million) / 1e6
        raw = {"ab": {k: v for k, v in ab.items() if k != "usage"},
               "ba": {k: v for k, v in ba.items() if k != "usage"}, "usage": usage}
        if ab["p_first"] is None or ba["p_first"] is None:
            return Judgment(q.key, None, raw={**raw, "unparseable": True})
        p_a = (ab["p_first"] + (1.0 - ba["p_first"])) / 2
        return Judgment(q.key, None if p_a == 0.5 else p_a > 0.5, p_a=p_a, raw=raw)

    def judge(self, pairs: Sequence[PairQuery]) -> Iterator[Judgment]:
        with ThreadPoolExecutor(max_workers=self.p.concurrency, thread_name_prefix="openai-judge") as pool:
            futures = [pool.submit(self._pair, q) for q in pairs]
            try:
                for f in as_completed(futures):
                    yield f.result()
            finally:
                for f in futures:
                    f.cancel()
