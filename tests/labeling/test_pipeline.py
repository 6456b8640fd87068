"""A shortened RLHF pipeline whose labels come from people on the page (two scripted HTTP annotators, overlap 2):
`alignpipe run` prints the page, the runner is killed with -9 mid-labeling, a rerun reopens the page at the same
address with every acknowledged judgment, the annotators finish, and the pipeline continues into reward and ppo."""

import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
import time

import pytest
import yaml
from annotators import label, label_until_down

from alignpipe.api import Workspace
from alignpipe.labeling.db import LabelDB
from alignpipe.task import gold_score

PAIRS = 24


def spec(tmp_path, model):
    return {"name": "human-rlhf", "seed": 0, "workspace": str(tmp_path / "ws"), "stages": {
        "data": {"uses": "task.reviews", "params": {"corpus": 10, "demos": 10, "pref_prompts": PAIRS,
                                                     "rl_prompts": 16, "eval_prompts": 4}},
        "pairs": {"uses": "generate", "inputs": {"model": model, "prompts": "data.pref_prompts"},
                  "params": {"n": 2, "max_new_tokens": 12}},
        "labels": {"uses": "label", "inputs": {"candidates": "pairs.out"},
                   "params": {"judge": "human", "max_skip_fraction": 0.9,
                              "human": {"overlap": 2, "guidelines": "Prefer the more positive review."}}},
        "reward": {"uses": "reward", "inputs": {"model": model, "data": "labels.out"},
                   "params": {"epochs": 1, "batch_size": 8, "eval_fraction": 0.2}},
        "ppo": {"uses": "ppo", "inputs": {"policy": model, "reward_model": "reward.model",
                                          "prompts": "data.rl_prompts"},
                "params": {"rollouts": 2, "batch_size": 8, "minibatch_size": 4, "max_new_tokens": 8}},
    }}


def decide_for(name):
    """A simulated person: the more positive response (VADER), longer on ties; bob disagrees on a quarter."""
    def decide(pair):
        time.sleep(0.02)  # a (very fast) human: labeling takes long enough to be interrupted
        left, right = gold_score([pair["left"], pair["right"]])
        better_left = (left, len(pair["left"])) >= (right, len(pair["right"]))
        flip = name == "bob" and hashlib.sha256(pair["key"].encode()).digest()[0] % 4 == 0
        return "left" if better_left != flip else "right"
    return decide


class Run:
    """`alignpipe run --json` as a process; its JSON events on a queue."""

    def __init__(self, path, log):
        self.proc = subprocess.Popen([sys.executable, "-m", "alignpipe", "run", str(path), "--json"],
                                     stdout=subprocess.PIPE, stderr=open(log, "a"), text=True,
                                     env={**os.environ, "OMP_NUM_THREADS": "1"})
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def wait_for(self, kind, timeout=240):
        deadline = time.monotonic() + timeout
        while True:
            ev = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            assert ev is not None, f"the run ended before a {kind!r} event"
            if ev.get("event") == kind:
                return ev


def invite(name, ws):
    out = subprocess.run([sys.executable, "-m", "alignpipe", "label", "invite", name, "--stage", "labels",
                          "-w", str(ws)], capture_output=True, text=True, check=True).stdout
    return out.splitlines()[1].rsplit(" ", 1)[1]


@pytest.mark.slow
def test_people_label_the_pipelines_pairs_through_a_kill_9_and_it_trains_on_them(tiny_model_dirs, tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec(tmp_path, str(tiny_model_dirs["gpt2"]))))
    log = tmp_path / "runs.log"

    # -- first run: the page comes up; two people start labeling; the runner is killed mid-way
    first = Run(path, log)
    notice = first.wait_for("notice")
    assert notice["stage"] == "labels" and notice["admin_link"].startswith(notice["url"] + "login?t=")
    tokens = {name: invite(name, tmp_path / "ws") for name in ("alice", "bob")}
    acked: list = []
    people = [threading.Thread(target=label_until_down, args=(notice["url"], tokens[n], decide_for(n), acked))
              for n in tokens]
    for t in people:
        t.start()
    db = LabelDB(notice["db"])
    n_pairs = db.progress()["pairs"]  # the pairs left after dropping empty and duplicate ones
    assert n_pairs > PAIRS // 2
    while db.progress()["votes"] < PAIRS // 2:
        time.sleep(0.005)
    first.proc.kill()  # kill -9 of the runner; its stage process dies with it (PDEATHSIG)
    first.proc.wait()
    for t in people:
        t.join(timeout=30)
    stored = {(j["annotator"], j["pair"]) for j in db.judgments()}
    assert {(who, pair) for who, pair, _ in acked} <= stored and 0 < len(stored) < 2 * n_pairs

    # -- rerun: the same page, where it stopped; the people finish; the pipeline goes on
    second = Run(path, log)
    again = second.wait_for("notice")
    assert again["url"] == notice["url"] and again["admin_link"] != notice["admin_link"]
    for name in tokens:
        label(again["url"], tokens[name], decide_for(name), acked)
    result = second.wait_for("result", timeout=600)
    assert second.proc.wait(timeout=60) == 0, log.read_text()[-3000:]
    assert {n: s["state"] for n, s in result["stages"].items()} == {
        "data": "cached", "pairs": "cached", "labels": "done", "reward": "done", "ppo": "done"}

    # -- the preference artifact: every acknowledged judgment once, who, in which order, agreement
    ws = Workspace(tmp_path / "ws")
    labels = ws.show("labels")
    judged = [json.loads(line) for line in (labels.path / "judgments.jsonl").read_text().splitlines()]
    keys = [(j["annotator"], j["pair"]) for j in judged]
    assert len(keys) == len(set(keys)) == 2 * n_pairs
    assert {(who, pair) for who, pair, _ in acked} <= set(keys)
    assert all(j["shown"] in ("ab", "ba") and j["choice"] in ("a", "b") for j in judged)
    human = labels.manifest["summary"]["human"]
    assert set(human["annotators"]) == {"alice", "bob"} and human["finished"] == "complete"
    agree = human["agreement"]
    assert agree["pairs_with_overlap"] == n_pairs and agree["fleiss_kappa"] is not None
    assert 0 < agree["agreement_with_majority"]["bob"]["rate"] < 1  # bob disagrees on about a quarter
    rows = (labels.path / "preferences.jsonl").read_text().splitlines()
    assert len(rows) == labels.manifest["summary"]["pairs"] == agree["outcomes"]["a"] + agree["outcomes"]["b"]
    reward = ws.show("reward.model").manifest
    assert reward["inputs"]["data"]["id"] == labels.id
    assert ws.show("ppo.policy").manifest["inputs"]["reward_model"]["id"] == reward["id"]
