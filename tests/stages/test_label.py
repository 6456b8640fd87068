import json
import math

import pytest
from stage_util import manifest

from alignpipe import api
from alignpipe.pipeline.errors import StageFailed, UserError


def candidates(tmp_path, records, name="cands"):
    d = tmp_path / name
    d.mkdir()
    (d / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return d


def prefs(out):
    return [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]



def test_noiseless_function_judge_counts_empty_duplicate_and_ties(tmp_path):
    cands = candidates(tmp_path, [
        {"prompt": "p1", "responses": ["short", "much longer"]},
        {"prompt": "p2", "responses": ["", "x"]},
        {"prompt": "p3", "responses": ["same", "same "]},
        {"prompt": "p4", "responses": ["abc", "xyz"]},  # equal length: a tie for a noiseless judge
        {"prompt": "p1", "responses": ["much longer", "short"]},  # the p1 pair again
        {"prompt": "p5", "responses": ["aa", "b", "cccc", "dd"]},
    ])
    out = tmp_path / "prefs"
    api.run_stage("label", inputs={"candidates": str(cands)}, out=out,
                  params={"function": "scorers:length", "noise_temperature": 0, "max_skip_fraction": 0.9})
    rows = prefs(out)
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("much longer", "short"), ("aa", "b"), ("cccc", "dd")]
    s = manifest(out)["summary"]
    assert s["skipped"] == {"empty": 1, "duplicate": 1, "duplicate_pair": 1, "tie": 1}
    assert s["pairs"] == 3 and s["label_agreement_with_scores"] == 1.0 and s["ceiling_accuracy"] == 1.0


def test_all_pairs_and_prompt_aware_function(tmp_path):
    cands = candidates(tmp_path, [{"prompt": "cat food", "responses": ["a cat", "dog", "cat!", "fish"]}])
    out = tmp_path / "prefs"
    api.run_stage("label", inputs={"candidates": str(cands)}, out=out,
                  params={"function": "scorers:by_prompt", "noise_temperature": 0, "pairing": "all"})
    rows = prefs(out)
    assert len(rows) == 4  # 6 pairs, 2 ties ("a cat" vs "cat!", "dog" vs "fish")
    assert all("cat" in r["chosen"] and "cat" not in r["rejected"] for r in rows)


def test_bradley_terry_noise_matches_its_probability_and_is_seeded(tmp_path):
    # length difference 1 at T=2: P(longer chosen) = sigmoid(0.5) = 0.622
    recs = [{"prompt": f"p{i}", "responses": ["x" * (i % 7 + 1), "y" * (i % 7 + 2)]} for i in range(3000)]
    cands = candidates(tmp_path, recs)
    params = {"function": "scorers:length", "noise_temperature": 2.0}
    api.run_stage("label", inputs={"candidates": str(cands)}, out=tmp_path / "a", params=params, seed=1)
    rows = prefs(tmp_path / "a")
    frac = sum(len(r["chosen"]) > len(r["rejected"]) for r in rows) / len(rows)
    expect = 1 / (1 + math.exp(-0.5))
    assert abs(frac - expect) < 3 * math.sqrt(expect * (1 - expect) / len(rows))
    assert manifest(tmp_path / "a")["summary"]["ceiling_accuracy"] == pytest.approx(expect)
    api.run_stage("label", inputs={"candidates": str(cands)}, out=tmp_path / "b", params=params, seed=1)
    api.run_stage("label", inputs={"candidates": str(cands)}, out=tmp_path / "c", params=params, seed=2)
    assert manifest(tmp_path / "a")["id"] == manifest(tmp_path / "b")["id"] != manifest(tmp_path / "c")["id"]


def test_a_crashed_judge_resumes_from_its_checkpoint_to_the_same_result(tmp_path, monkeypatch):
    recs = [{"prompt": f"p{i}", "responses": ["x" * (i % 5 + 1), "y" * (i % 3 + 1)]} for i in range(300)]
    cands = candidates(tmp_path, recs)
    params = {"function": "scorers:flaky_length", "noise_temperature": 0.5, "checkpoint_every": 100,
              "max_skip_fraction": 0.9}
    marker = tmp_path / "fail"
    marker.write_text("")
    monkeypatch.setenv("ALIGNPIPE_TEST_FAIL", str(marker))
    out = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="judge crashed"):
        api.run_stage("label", inputs={"candidates": str(cands)}, out=out, params=params)
    ckpts = sorted(c.name for c in (tmp_path / "resumed.work").glob("*/ckpt/step-*"))
    assert ckpts[-1] == "step-000000256"  # every 100, and on the crash: the first batch's 256 judgments
    marker.unlink()
    api.run_stage("label", inputs={"candidates": str(cands)}, out=out, params=params)
    monkeypatch.delenv("ALIGNPIPE_TEST_FAIL")
    api.run_stage("label", inputs={"candidates": str(cands)}, out=tmp_path / "clean", params=params)
    assert manifest(out)["id"] == manifest(tmp_path / "clean")["id"]


def test_import_judge_reads_plain_and_chat_preferences(tmp_path):
    src = tmp_path / "hh.jsonl"
    chat = [{"role": "user", "content": "hi"}]
    src.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "q", "chosen": "good", "rejected": "bad"},
        {"prompt": "q", "chosen": "good", "rejected": "bad"},
        {"prompt": "q", "chosen": "meh", "rejected": "meh"},
        {"chosen": chat + [{"role": "assistant", "content": "hello!"}],
         "rejected": chat + [{"role": "assistant", "content": "go away"}]},
    ]) + "\n")
    out = tmp_path / "prefs"
    api.run_stage("label", inputs={"preferences": str(src)}, out=out,
                  params={"judge": "import", "max_skip_fraction": 0.25})
    rows = prefs(out)
    assert [(r["prompt"], r["chosen"]) for r in rows] == [("q", "good"), (chat, "hello!")]
    assert manifest(out)["summary"]["skipped"] == {"duplicate_pair": 1, "identical": 1}


def test_import_judge_reads_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "q1", "chosen": "yes", "rejected": "no"}, {"prompt": "q2", "chosen": "fine", "rejected": ""}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "prefs.parquet")
    out = tmp_path / "prefs"
    api.run_stage("label", inputs={"preferences": str(tmp_path / "prefs.parquet")}, out=out,
                  params={"judge": "import"})
    assert [(r["prompt"], r["chosen"]) for r in prefs(out)] == [("q1", "yes")]
    assert manifest(out)["summary"]["skipped"]["empty"] == 1  # the empty rejected response is counted, not kept


def test_too_many_skips_is_an_error(tmp_path):
    cands = candidates(tmp_path, [{"prompt": "p", "responses": ["", ""]}, {"prompt": "q", "responses": ["a", "bb"]}])
    with pytest.raises(StageFailed, match=r"1 of 2 candidate pairs skipped.*max_skip_fraction=0.2"):
        api.run_stage("label", inputs={"candidates": str(cands)}, out=tmp_path / "o",
                      params={"function": "scorers:length", "max_skip_fraction": 0.2})


def test_judge_inputs_are_checked_in_manual_mode_too(tmp_path):
    with pytest.raises(UserError, match=r"stage 'label' \(label\): inputs: judge 'import' needs an input"):
        api.run_stage("label", inputs={}, out=tmp_path / "o", params={"judge": "import"})


def test_judge_inputs_are_checked_at_validation(tmp_path):
    spec = {"name": "p", "stages": {"lab": {"uses": "label", "params": {"judge": "import"}}}}
    with pytest.raises(UserError, match=r"stages\.lab\.inputs: judge 'import' needs an input 'preferences'"):
        api.from_dict(spec, base_dir=tmp_path)
    spec["stages"]["lab"]["params"] = {"judge": "reward_model"}
    with pytest.raises(UserError, match="judge 'reward_model' needs an input 'candidates'"):
        api.from_dict(spec, base_dir=tmp_path)
