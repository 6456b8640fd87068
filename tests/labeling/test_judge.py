"""The label stage with `judge: human`: people judge through the page (scripted HTTP annotators here), the
majority decides, and the artifact records who judged what, in which order, and how much they agreed."""

import json

import pytest
from annotators import label, run_in_thread, wait_for_page

from alignpipe import api
from alignpipe.labeling.client import PageClient
from alignpipe.labeling.db import LabelDB
from alignpipe.pipeline.errors import StageFailed, UserError


def candidates(tmp_path, n):
    path = tmp_path / "cands.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}", "responses": [f"a{i}", f"b{i}"]}) + "\n"
                            for i in range(n)))
    return path


def wants(plan):
    """decide(): the side showing the response `plan[pair index]` names ("a", "b", "tie")."""
    def decide(pair):
        want = plan[int(pair["key"].split(":")[0])]
        if want == "tie":
            return "tie"
        return "left" if pair["left"].startswith(want) else "right"
    return decide


def start_stage(tmp_path, n, **params):
    out = tmp_path / "prefs"
    thread, errors = run_in_thread(api.run_stage, "label", inputs={"candidates": str(candidates(tmp_path, n))},
                                   out=out, params={"judge": "human", **params})
    url, db = wait_for_page(tmp_path / "prefs.work")
    return out, thread, errors, url, db


def finish_stage(thread, errors, out):
    thread.join(timeout=60)
    assert not thread.is_alive() and not errors, errors
    rows = [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]
    return rows, json.loads((out / "manifest.json").read_text())["summary"]


def test_people_judge_and_the_strict_majority_decides(tmp_path):
    out, thread, errors, url, db = start_stage(tmp_path, 4, max_skip_fraction=0.9,
                                               human={"overlap": 3, "guidelines": "Pick the a's"})
    tokens = {name: LabelDB(db).invite(name) for name in ("x", "y", "z")}
    plans = {"x": ["a", "a", "tie", "b"], "y": ["a", "b", "tie", "b"], "z": ["b", "tie", "a", "b"]}
    for name, plan in plans.items():  # pair 0: a a b -> a; 1: a b tie -> split; 2: tie tie a -> tie; 3: b b b -> b
        assert label(url, tokens[name], wants(plan)) == 4
    rows, summary = finish_stage(thread, errors, out)
    assert [(r["key"], r["chosen"], r["p_chosen"]) for r in rows] == [("0:0:1", "a0", 2 / 3), ("3:0:1", "b3", 1.0)]
    assert summary["skipped"]["tie"] == 2 and summary["unlabeled"] == 0 and summary["ceiling_accuracy"] is None
    human = summary["human"]
    assert human["agreement"]["outcomes"] == {"a": 1, "b": 1, "tie": 1, "split": 1}
    assert human["annotators"] == {n: {"judgments": 4, "skips": 0} for n in "xyz"}
    assert human["finished"] == "complete" and sum(human["shown"].values()) == 12
    judged = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert len(judged) == 12 and len({(j["pair"], j["annotator"]) for j in judged}) == 12
    for j in judged:  # recorded in the pair's own terms, with the order the page showed
        want = plans[j["annotator"]][int(j["pair"][0])]
        assert j["choice"] == want and j["shown"] in ("ab", "ba") and j["dwell"] >= 0 and j["source"] == "page"


def test_finish_early_keeps_what_was_judged(tmp_path):
    out, thread, errors, url, db = start_stage(tmp_path, 6, max_pairs=4)
    job = LabelDB(db)
    assert job.progress()["pairs"] == 4  # max_pairs: only the first four are put up
    assert label(url, job.invite("x"), wants(["a"] * 6), limit=2) == 2
    boss = PageClient(url, job.invite("boss", admin=True))
    assert boss.admin()["progress"]["votes"] == 2
    boss.finish()
    rows, summary = finish_stage(thread, errors, out)
    assert [r["chosen"] for r in rows] == ["a0", "a1"]
    assert (summary["unlabeled"], summary["not_offered"], summary["human"]["finished"]) == (2, 2, "finished by boss")


def test_finishing_with_nothing_judged_is_an_error(tmp_path):
    out, thread, errors, url, db = start_stage(tmp_path, 3)
    LabelDB(db).finish("operator")
    thread.join(timeout=60)
    assert len(errors) == 1 and isinstance(errors[0], StageFailed)
    assert "labeled none of the 3 pairs" in str(errors[0])


def test_human_params_are_checked_at_validation(tmp_path):
    spec = {"name": "p", "stages": {"lab": {"uses": "label", "inputs": {"candidates": str(candidates(tmp_path, 1))},
                                            "params": {"human": {"overlap": 2}}}}}
    with pytest.raises(UserError, match=r"stages\.lab\.params\.human: set, but only judge 'human' reads it"):
        api.from_dict(spec, base_dir=tmp_path)
    spec["stages"]["lab"]["params"] = {"judge": "human", "human": {"overlap": 0}}
    with pytest.raises(UserError, match=r"overlap"):
        api.from_dict(spec, base_dir=tmp_path)
