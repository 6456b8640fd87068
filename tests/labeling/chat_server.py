"""A test server speaking the OpenAI chat-completions protocol over real HTTP, answering with a local causal LM
(the same NextTokenScorer `judge: llm` uses): one token, its top log-probabilities, token usage.

Its chat template: the messages' contents, then a space, where the answer begins (so with the tiny byte-level
tokenizer it reads the same tokens `judge: llm` reads for the answers " A" / " B"). It can refuse the first N
requests (429 with Retry-After, or 500) and records what it saw: requests, the most in flight at once, their
start times."""

from __future__ import annotations

import threading
import time

import uvicorn
from fastapi import FastAPI, HTTPException, Request

from alignpipe.labeling.llm_judge import NextTokenScorer
from alignpipe.labeling.server import bind

KEY = "test-key"


class ChatServer:
    def __init__(self, model_dir: str, fail_first: int = 0, fail_status: int = 429, delay: float = 0.0):
        self.scorer = NextTokenScorer(model_dir, max_length=1024)
        self.lock = threading.Lock()
        self.fail_left, self.fail_status, self.delay = fail_first, fail_status, delay
        self.requests, self.in_flight, self.max_in_flight, self.starts = 0, 0, 0, []
        app = FastAPI()
        app.post("/v1/chat/completions")(self.complete)
        self.sock = bind("127.0.0.1", 0)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def complete(self, body: dict, request: Request) -> dict:
        with self.lock:
            self.requests += 1
            self.starts.append(time.monotonic())
        if request.headers.get("authorization") != f"Bearer {KEY}":
            raise HTTPException(401, "invalid api key")
        with self.lock:
            failing = self.fail_left > 0
            self.fail_left -= failing
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            if failing:
                raise HTTPException(self.fail_status, "try again", headers={"Retry-After": "0.05"})
            return self._answer(body)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _answer(self, body: dict) -> dict:
        import torch

        text = "\n\n".join(m["content"] for m in body["messages"])
        answer_start = self.scorer.tokenizer(" ", add_special_tokens=False)["input_ids"]
        with self.lock:  # one forward at a time: the model is shared by the handler threads
            logprobs = torch.log_softmax(self.scorer.logits([text], answer_start)[0], dim=-1)
        k = int(body.get("top_logprobs") or 1) if body.get("logprobs") else 1
        top = torch.topk(logprobs, k)
        tokens = [self.scorer.tokenizer.decode([i]) for i in top.indices.tolist()]
        choice = {"index": 0, "finish_reason": "length", "message": {"role": "assistant", "content": tokens[0]}}
        if body.get("logprobs"):
            entries = [{"token": t, "logprob": lp} for t, lp in zip(tokens, top.values.tolist(), strict=True)]
            choice["logprobs"] = {"content": [{**entries[0], "top_logprobs": entries}]}
        return {"id": f"cmpl-{self.requests}", "object": "chat.completion", "model": body["model"],
                "choices": [choice], "usage": {"prompt_tokens": len(self.scorer.ids(text)), "completion_tokens": 1,
                                               "total_tokens": len(self.scorer.ids(text)) + 1}}

    def __enter__(self) -> ChatServer:
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
