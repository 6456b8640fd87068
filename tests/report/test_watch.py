"""`alignpipe watch`: progress and ETA from literal events, and the live view in a real terminal (tmux)."""

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from alignpipe.report.watch import Progress, Snapshot, StageView, duration, render

ENGINE_TESTS = str(Path(__file__).resolve().parent.parent / "engine")


def test_progress_reads_whole_lines_and_estimates_the_rest(tmp_path):
    events = tmp_path / "events.jsonl"
    lines = [{"type": "progress", "done": 2, "total": 10, "desc": "steps", "t": 100.0},
             {"type": "metrics", "step": 3, "values": {"loss": 1.0}, "t": 101.0},
             {"type": "progress", "done": 6, "total": 10, "desc": "steps", "t": 104.0}]
    events.write_text("".join(json.dumps(e) + "\n" for e in lines) + '{"type": "progress", "do')  # mid-write
    p = Progress()
    p.read(events)
    assert (p.first, p.last, p.total, p.desc) == ((100.0, 2.0), (104.0, 6.0), 10.0, "steps")
    assert p.eta() == pytest.approx(4.0)  # 4 ticks left at 1 tick/s
    with open(events, "a") as f:
        f.write('ne": 8, "total": 10, "t": 105.0}\n')
    p.read(events)
    assert p.last == (105.0, 8.0) and p.eta() == pytest.approx(2 / (6 / 5))
    assert Progress().eta() is None


def test_run_eta_adds_pending_stages_previous_durations():
    running = StageView("b", "running", progress=Progress(first=(0.0, 0.0), last=(10.0, 5.0), total=10.0))
    snap = Snapshot({"id": "r", "status": "running", "started": 0.0},
                    {"a": StageView("a", "done"), "b": running, "c": StageView("c", expected=30.0),
                     "d": StageView("d", expected=None)})
    assert snap.eta() == (pytest.approx(10.0 + 30.0), False)  # d has no earlier duration: a lower bound
    assert [duration(s) for s in (5, 75, 3725)] == ["5s", "1m15s", "1h02m"]
    text = _plain(render(snap, now=20.0))
    assert "run r · ? · running 20s · ETA ≥ 40s (some stages never ran here)" in text
    assert "5/10" in text and "ETA 10s" in text
    from alignpipe.report.watch import _expect_from_siblings

    views = {"p@k=1": StageView("p@k=1", "done", started=0.0, ended=10.0),
             "p@k=2": StageView("p@k=2", "done", started=10.0, ended=30.0), "p@k=3": StageView("p@k=3")}
    _expect_from_siblings(views)
    assert views["p@k=3"].expected == 15.0
    del snap.stages["d"]
    assert "· ETA ~40s" in _plain(render(snap, now=20.0))
    running.metrics, running.metrics_step = {"advantage_mean": 0.1, "kl": 2.0, "score": 1.5}, 7
    assert "b step 7: score 1.5 · kl 2 · advantage_mean 0.1" in _plain(render(snap, now=20.0))


def _plain(renderable) -> str:
    from rich.console import Console

    console = Console(width=120, record=True, file=open(os.devnull, "w"))  # noqa: SIM115 — closed with the console
    console.print(renderable)
    return console.export_text()


# ---------------------------------------------------------------------------------------------------------------
# a real terminal


@pytest.fixture
def tmux():
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    sock = f"alignpipe-test-{uuid.uuid4().hex[:8]}"  # a private server: never touches anyone's tmux

    def cmd(*args):
        return subprocess.run(["tmux", "-L", sock, *args], capture_output=True, text=True, timeout=20, check=True)

    yield cmd
    subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True, timeout=20)


def _wait_for(pane, predicate, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = pane()
        if predicate(text):
            return text
        time.sleep(0.2)
    raise AssertionError(f"pane never matched; last screen:\n{pane()}")


def test_watch_in_a_real_terminal_shows_stages_progress_and_exits_with_the_run(tmp_path, tmux):
    ws = tmp_path / "ws"
    stages = {"first": {"uses": "teststages:counter",
                        "params": {"steps": 4, "step_s": 0.2, "trace": str(tmp_path / "1")}},
              "second": {"uses": "teststages:counter", "inputs": {"x": "first.out"},
                         "params": {"steps": 16, "step_s": 0.4, "trace": str(tmp_path / "2")}}}
    (tmp_path / "p.yaml").write_text(json.dumps({"name": "watched", "workspace": str(ws), "stages": stages}))
    env = {**os.environ, "PYTHONPATH": ENGINE_TESTS}
    watch = f"{sys.executable} -m alignpipe watch -w {ws} --interval 0.2; echo WATCH-EXIT=$?; sleep 120"
    tmux("new-session", "-d", "-s", "w", "-x", "140", "-y", "20", watch)  # before the run: it waits for one

    def pane():
        return tmux("capture-pane", "-p", "-t", "w").stdout

    _wait_for(pane, lambda t: "waiting for a run to start" in t)
    run = subprocess.Popen([sys.executable, "-m", "alignpipe", "run", str(tmp_path / "p.yaml"), "-q"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        screen = _wait_for(pane, lambda t: "second running" in t and "/16 " in t and "step " in t)
        assert "✔ first  done" in screen and "run " in screen and "· watched · running" in screen
        assert "ETA" in screen and "loss" in screen  # the running stage's latest metrics
        bar = next(line for line in screen.splitlines() if "second running" in line)
        assert any(c in bar for c in "━╸╺")  # rich's progress bar
        done = _wait_for(pane, lambda t: "WATCH-EXIT=" in t)
        assert run.wait(timeout=60) == 0
    finally:
        run.kill()
    assert "WATCH-EXIT=0" in done and "✔ second done" in done and "· watched · done" in done
