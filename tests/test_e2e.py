"""The embedded default pipeline, shrunk, end to end: RLHF visibly works, reruns are cached, lineage is whole.

Same graph as `alignpipe run` (src/alignpipe/examples/rlhf.yaml), smaller data, model and budgets.
"""

import json
import math
import re
import time

import pytest

from alignpipe import api
from alignpipe.api import Workspace
from pipelines import rlhf_spec


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    ws = tmp_path_factory.mktemp("e2e") / "ws"
    pipe = api.from_dict(rlhf_spec(ws))
    result = api.run(pipe)
    return pipe, result, ws


def test_rlhf_raises_the_gold_score_beyond_noise(small_run):
    _, result, ws = small_run
    assert result.status == "done", {n: s.error for n, s in result.stages.items() if s.error}
    w = Workspace(ws)
    metrics = json.loads((w.show("evaluate").path / "metrics.json").read_text())
    sft, rlhf = metrics["models"]["sft"], metrics["models"]["rlhf"]
    gain = rlhf["gold"]["mean"] - sft["gold"]["mean"]
    noise = math.hypot(rlhf["gold"]["stderr"], sft["gold"]["stderr"])
    assert gain > 3 * noise, f"gold {sft['gold']} -> {rlhf['gold']}"
    assert rlhf["gold_win_rate"]["ci_low"] > 0.5
    kl_target = w.show("ppo.policy").manifest["params"]["kl_target"]
    assert 0 < rlhf["kl"]["mean"] <= kl_target
    rm = w.show("reward").manifest["summary"]
    assert 0.5 < rm["eval_accuracy"] <= 1.0 and rm["label_ceiling_accuracy"] < 1.0  # noisy labels, learned RM


def test_second_run_is_fully_cached_and_fast(small_run):
    pipe, _, ws = small_run
    t0 = time.time()
    again = api.run(pipe)
    assert {s.state for s in again.stages.values()} == {"cached"}
    assert time.time() - t0 < 10


def test_lineage_from_the_rlhf_policy_reaches_the_base_model_and_the_judge(small_run):
    _, result, ws = small_run
    tree = Workspace(ws).lineage(result.stages["ppo"].outputs["policy"])

    def nodes(n):
        yield n
        for child in n.get("inputs", {}).values():
            yield from nodes(child)

    found = {(n.get("stage"), n.get("output")): n for n in nodes(tree)}
    assert ("base", "model") in found and ("sft", "model") in found and ("reward", "model") in found
    labels = Workspace(ws).show(found[("labels", "out")]["id"]).manifest
    assert labels["summary"]["judge"] == {"type": "function", "function": "alignpipe.task:gold_score",
                                          "noise_temperature": 0.1}
    assert tree["inputs"]["policy"]["stage"] == "sft"  # the KL anchor is πSFT itself


def test_the_runs_report_opens_offline_in_a_real_browser_and_prints(small_run, chromium, tmp_path):
    import base64

    from alignpipe.report import write_report

    _, result, ws = small_run
    path = write_report(ws, result.run_id, tmp_path / "report.html")
    assert path.stat().st_size < 3 * 2**20
    chromium.get(path.as_uri())
    assert chromium.console_errors() == []
    assert chromium.requests() == [path.as_uri()]  # the page itself, nothing else: no CDN, no font, no image
    headings = [h.text for h in chromium.find_elements("tag name", "h2")]
    assert headings == ["Findings", "Evaluation", "Samples", "Metric curves", "Stage timeline", "Lineage"]
    charts = chromium.find_elements("css selector", "svg.chart")
    assert len(charts) >= 20 and all(c.size["width"] >= 200 and c.size["height"] >= 100 for c in charts)
    assert len(chromium.find_elements("css selector", "svg.chart polyline")) >= 20  # curves drawn, not empty axes
    samples = chromium.find_element("css selector", "table.samples")
    assert samples.find_elements("tag name", "th")[1].text == "sft"  # the baseline first, then πRLHF
    assert len(samples.find_elements("tag name", "tr")) == 1 + 12
    chromium.screenshot(tmp_path / "report.png")
    pdf = base64.b64decode(chromium.execute_cdp_cmd("Page.printToPDF", {"printBackground": True})["data"])
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page[^s]", pdf)) >= 3  # pages, not /Pages
