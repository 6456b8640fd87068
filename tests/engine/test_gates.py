"""Quality gates: parsing and checking on literals; in the runner, a failed gate rejects the stage and stops its
descendants, on a fresh run and on a cache hit, without retraining when the gate changes."""

import pytest
from engine_util import chain, cli, executed, run

from alignpipe.pipeline.errors import UserError
from alignpipe.pipeline.gates import check_gates, parse_gate


@pytest.mark.parametrize("text,parsed", [(">= 0.7", (">=", 0.7)), ("<=8", ("<=", 8.0)), ("== -1e-3", ("==", -0.001)),
                                         (" > .5 ", (">", 0.5)), ("!= 0", ("!=", 0.0))])
def test_parse_gate(text, parsed):
    assert parse_gate(text) == parsed


@pytest.mark.parametrize("text", ["0.7", ">= high", "=> 1", ">= 1 2", ""])
def test_parse_gate_refuses(text):
    with pytest.raises(ValueError, match="is not a comparison; expected OP NUMBER"):
        parse_gate(text)


def test_check_gates_reads_nested_summaries_and_reports_each_failure():
    summaries = [{"kl": 9.5, "eval": {"accuracy": 0.61}, "lora": True}, {"value_loss": 0.2}]
    assert check_gates({"kl": "<= 10", "eval.accuracy": "> 0.6", "value_loss": "< 1"}, summaries) == []
    assert check_gates({"kl": "<= 8", "eval.accuracy": ">= 0.7"}, summaries) == [
        "gate kl <= 8 failed: kl = 9.5", "gate eval.accuracy >= 0.7 failed: eval.accuracy = 0.61"]
    (missing,) = check_gates({"accuracy": ">= 0.7"}, summaries)
    assert missing.startswith("gate accuracy >= 0.7: the stage reported no number 'accuracy' (it reported: "
                              "eval.accuracy, kl, value_loss)")
    assert check_gates({"x": ">= 0"}, [{"x": float("nan")}]) == ["gate x >= 0 failed: x = nan"]


def test_a_failed_gate_rejects_the_stage_stops_descendants_and_is_rechecked_on_cache_hits(tmp_path):
    spec = chain(tmp_path, b={"gates": {"value": ">= 5"}})  # b's value is 2
    res, states = run(tmp_path, spec)
    assert states == {"a": "done", "b": "rejected", "c": "skipped", "d": "done"} and res.exit_code == 1
    assert res.stages["b"].error.startswith("gate value >= 5 failed: value = 2. Its output (")
    assert res.stages["b"].outputs  # published and kept for a look
    executed(tmp_path)
    res, states = run(tmp_path, spec)  # cached, and still rejected: nothing retrains, nothing proceeds
    assert states["b"] == "rejected" and states["c"] == "skipped" and executed(tmp_path) == []
    r = cli("status", "-w", tmp_path / "ws")
    assert "rejected" in r.stdout and "gate value >= 5 failed: value = 2" in r.stdout
    res, states = run(tmp_path, chain(tmp_path, b={"gates": {"value": ">= 1"}}))  # loosened: b passes from cache
    assert states == {"a": "cached", "b": "cached", "c": "done", "d": "cached"} and executed(tmp_path) == ["c"]


def test_gates_are_validated_with_the_spec(tmp_path):
    with pytest.raises(UserError, match=r"stages\.b\.gates: gate 'high' is not a comparison"):
        run(tmp_path, chain(tmp_path, b={"gates": {"value": "high"}}))
