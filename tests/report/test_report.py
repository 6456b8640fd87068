"""The HTML report from a workspace's record: a real pipeline run, and a recorded RLHF-shaped run whose numbers
raise every finding."""

import re
import time

import pytest
from recorded import HOSTILE, rlhf_run

from alignpipe import api
from alignpipe.pipeline.errors import UserError
from alignpipe.report import render_html, write_report
from alignpipe.report.checks import findings
from alignpipe.report.collect import collect


@pytest.fixture
def recorded(tmp_path):
    ws = tmp_path / "ws"
    return ws, rlhf_run(ws)


def test_findings_on_a_recorded_rlhf_run(recorded):
    ws, run_id = recorded
    texts = {(f.level, f.stage, f.text.split(":")[0]) for f in findings(collect(ws, run_id))}
    assert ("error", "broken", "stopped on a non-finite value") in texts
    assert ("warning", "ppo", "KL to the reference 9.00 nats over the last 5 rollouts, more than 10% above the target "
            "of 6") in texts
    assert ("warning", "reward", "reward model held-out accuracy 0.520 on 50 pairs") in texts
    assert any(f.stage == "ppo" and "response length climbed 10.0 → 30.0" in f.text for f in findings(collect(ws)))
    evaluate = [f.text for f in findings(collect(ws)) if f.stage == "evaluate"]
    assert any("held-out KL to sft 8.50 ± 0.10 nats, above PPO's target of 6" in t for t in evaluate)
    assert any("responses 30.0 tokens long vs 10.0" in t for t in evaluate)
    assert any("of word bigrams repeat" in t for t in evaluate)  # "great great great ..." vs "It is fine."


def test_report_shows_every_section_and_escapes_model_text(recorded):
    ws, run_id = recorded
    page = render_html(ws, run_id)
    for heading in ("Findings", "Evaluation", "Samples", "Metric curves", "Stage timeline", "Lineage"):
        assert f"<h2>{heading}</h2>" in page
    assert HOSTILE not in page and "<script" not in page and "&lt;script&gt;alert(&quot;x&quot;)" in page
    assert not re.search(r"<(img|link|script|iframe|object)\b|\s(src|href)=\"", page)  # nothing a browser fetches
    assert "RM calibration" in page and "ECE 0.040" in page
    assert page.count("<h3>ppo") == 1 and ">kl</text>" in page and ">target</text>" in page
    # the evaluation table: baseline first, intervals mean ± 1.96·se
    table = page[page.index("<h3>evaluate</h3>"):]
    assert table.index("<td>sft</td>") < table.index("<td>rlhf</td>")
    assert "0.500 ± 0.010 <span class=muted>[0.480, 0.520]</span>" in table
    # lineage: an edge per consumed artifact, labelled output → input
    assert "sft.model → policy" in page and "reward.model → reward_model" in page


def test_a_real_run_timeline_attempts_metrics_and_retries(tmp_path, teststages):
    counter = {"uses": "teststages:counter", "params": {"steps": 4, "step_s": 0.01, "trace": str(tmp_path / "t")}}
    flaky = {"uses": "teststages:flaky", "params": {"counter": str(tmp_path / "n"), "fail_times": 1}, "retries": 1,
             "inputs": {"x": "count.out"}}
    spec = {"name": "real", "workspace": str(tmp_path / "ws"), "stages": {"count": counter, "flaky": flaky}}
    pipe = api.from_dict(spec, base_dir=tmp_path)
    first = api.run(pipe)
    assert first.status == "done"
    data = collect(tmp_path / "ws")
    assert [len(s.executed) for s in data.stages.values()] == [1, 2]
    assert data.stages["count"].metrics["loss"] == [(0, 1.0), (1, 0.5), (2, 1 / 3), (3, 0.25)]
    assert [f.text.split(";")[0] for f in findings(data)] == ["needed 2 attempts"]
    page = render_html(tmp_path / "ws")
    assert page.count('class="chart timeline"') == 1 and len(re.findall(r"<rect[^>]*fill=\"#c62828\"", page)) == 1
    assert "count.out → x" in page and "not started" not in page
    again = api.run(pipe)  # all cached: the report says when the outputs were really made
    page = render_html(tmp_path / "ws", again.run_id)
    assert f"ran {data.stages['count'].seconds:.1f} s in run {first.run_id}" in page
    assert render_html(tmp_path / "ws", first.run_id[:17]).count("needed 2 attempts") == 1


def test_compare_puts_two_runs_side_by_side(tmp_path, teststages):
    spec = {"name": "cmp", "workspace": str(tmp_path / "ws"), "stages": {"count": {
        "uses": "teststages:counter", "params": {"steps": 3, "step_s": 0.0, "trace": str(tmp_path / "t")}}}}
    a = api.run(api.from_dict(spec, base_dir=tmp_path)).run_id
    spec["stages"]["count"]["params"]["steps"] = 5
    b = api.run(api.from_dict(spec, base_dir=tmp_path)).run_id
    out = write_report(tmp_path / "ws", a, tmp_path / "cmp.html", compare=b)
    page = out.read_text()
    assert f"run A {a} vs run B {b}" in page and "steps: 3 → 5" in page
    assert "A loss" in page and "B loss" in page


def test_bad_references_are_one_line_errors(recorded, tmp_path):
    ws, _ = recorded
    with pytest.raises(UserError, match="no run matches 'nope'; see `alignpipe runs`"):
        write_report(ws, "nope")
    with pytest.raises(UserError, match="no alignpipe workspace here"):
        write_report(tmp_path / "empty")
    with pytest.raises(UserError, match="its directory does not exist"):
        write_report(ws, out=tmp_path / "missing" / "r.html")


def test_report_of_the_recorded_run_is_fast(recorded):
    ws, run_id = recorded
    t0 = time.perf_counter()
    write_report(ws, run_id)
    assert time.perf_counter() - t0 < 2.0


def test_stages_a_failure_kept_from_starting_are_listed(tmp_path, teststages):
    stages = {"bad": {"uses": "teststages:die", "params": {"code": 3}},
              "after": {"uses": "teststages:record", "inputs": {"x": "bad.out"},
                        "params": {"marker": str(tmp_path / "m"), "value": 1}}}
    res = api.run(api.from_dict({"name": "f", "workspace": str(tmp_path / "ws"), "stages": stages}, base_dir=tmp_path))
    assert res.status == "failed"
    data = collect(tmp_path / "ws")
    assert data.plan == ["bad", "after"] and data.not_started == ["after"]
    page = render_html(tmp_path / "ws")
    assert "<td>after</td><td>–</td><td class=muted>not started</td>" in page
    assert "skipped: an upstream stage did not finish" in page
    assert [f.text for f in findings(data)] == ["failed after 1 attempt(s): exited with code 3"]
