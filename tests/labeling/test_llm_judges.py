"""`judge: llm` (a local causal LM) and `judge: openai` (an OpenAI-compatible endpoint, here a test server over
real HTTP wrapping the same local model): P(A) vs P(B) from next-token logits, both orders averaged."""

import json

import pytest
import torch
from chat_server import KEY, ChatServer

from alignpipe import api
from alignpipe.judges import PairQuery
from alignpipe.labeling.llm_judge import LocalLMJudge, NextTokenScorer
from alignpipe.labeling.openai_judge import EndpointUnavailable, OpenAIJudge
from alignpipe.labeling.params import LM_TEMPLATE, LLMParams, OpenAIParams, fill
from alignpipe.pipeline.errors import StageFailed

PAIRS = [PairQuery(f"{i}:0:1", f"Review the item number {i}.", f"Good product {i}, works well.",
                   f"Bad {i}. It broke after a day and support never answered.") for i in range(5)]
PAIRS.append(PairQuery("5:0:1", [{"role": "user", "content": "Say hi."}], "hi {there}", "hello"))


@pytest.fixture(scope="module")
def judge_models(tiny_tokenizer, tmp_path_factory):
    """A tiny GPT-2 with room for the template (256 positions), and the same model with its final layer norm's
    bias pushed toward the answers ' A' and ' B', so both are among the top log-probabilities an endpoint
    returns (which ones wins still depends on the input)."""
    from alignpipe.models.build import LMSpec, build_causal_lm, save_model

    root = tmp_path_factory.mktemp("judges")
    model = build_causal_lm(LMSpec(arch="gpt2", n_layer=2, hidden=32, n_head=2, max_positions=256),
                            tiny_tokenizer, seed=1)
    plain = save_model(model, tiny_tokenizer, root / "plain")
    emb = model.get_input_embeddings().weight
    _, a, b = NextTokenScorer(str(plain), 256).answer_tokens(" A", " B")
    with torch.no_grad():
        model.transformer.ln_f.bias += 6.0 * (emb[a] / emb[a].norm() ** 2 + emb[b] / emb[b].norm() ** 2)
    answers = save_model(model, tiny_tokenizer, root / "answers")
    with torch.no_grad():  # a judge blind to its input that always says " A": pure position bias
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(30.0 * emb[a] / emb[a].norm() ** 2)
    always_a = save_model(model, tiny_tokenizer, root / "always_a")
    return {"plain": str(plain), "answers": str(answers), "always_a": str(always_a)}


def test_local_judge_reads_the_next_token_of_each_order_like_a_plain_forward(judge_models):
    got = {j.key: j for j in LocalLMJudge(judge_models["plain"], "m", LLMParams(batch_size=4)).judge(PAIRS)}
    scorer = NextTokenScorer(judge_models["plain"], 1024)
    shared, a, b = scorer.answer_tokens(" A", " B")
    for q in PAIRS:  # one text at a time: no padding, no batch
        first = []
        for x, y in ((q.a, q.b), (q.b, q.a)):
            ids = torch.tensor([scorer.ids(fill(LM_TEMPLATE, q.prompt, x, y), shared)])
            logits = scorer.model(input_ids=ids).logits[0, -1]
            first.append(torch.softmax(logits[[a, b]], dim=-1)[0].item())
        j = got[q.key]
        assert j.raw["p_first_ab"] == pytest.approx(first[0], abs=1e-5)
        assert j.raw["p_first_ba"] == pytest.approx(first[1], abs=1e-5)
        assert j.p_a == pytest.approx((first[0] + 1 - first[1]) / 2, abs=1e-5)
        assert j.a_preferred == (j.p_a > 0.5)
    swapped = {j.key: j.p_a for j in LocalLMJudge(judge_models["plain"], "m", LLMParams()).judge(
        [PairQuery(q.key, q.prompt, q.b, q.a) for q in PAIRS])}
    assert all(swapped[k] == pytest.approx(1 - got[k].p_a, abs=1e-6) for k in swapped)  # no favoured side


def test_averaging_both_orders_cancels_a_pure_position_bias(judge_models):
    judged = list(LocalLMJudge(judge_models["always_a"], "m", LLMParams()).judge(PAIRS))
    assert all(j.raw["p_first_ab"] > 0.99 and j.raw["p_first_ba"] > 0.99 for j in judged)  # it always says A
    assert all(j.p_a == pytest.approx(0.5, abs=1e-3) for j in judged)


def test_label_stage_with_the_llm_judge_keeps_raw_answers(judge_models, tmp_path):
    cands = tmp_path / "c.jsonl"
    cands.write_text("".join(json.dumps({"prompt": q.prompt, "responses": [q.a, q.b]}) + "\n" for q in PAIRS))
    out = tmp_path / "prefs"
    api.run_stage("label", inputs={"candidates": str(cands), "judge_model": judge_models["plain"]}, out=out,
                  params={"judge": "llm", "llm": {"batch_size": 3}, "max_skip_fraction": 1.0})
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    assert summary["judge"]["type"] == "llm" and summary["pairs"] == 6
    raw = [json.loads(line) for line in (out / "raw_answers.jsonl").read_text().splitlines()]
    assert [r["key"] for r in raw] == [f"{i}:0:1" for i in range(6)] and all("p_first_ba" in r for r in raw)
    with pytest.raises(StageFailed, match="do not differ in a token"):
        api.run_stage("label", inputs={"candidates": str(cands), "judge_model": judge_models["plain"]},
                      out=tmp_path / "o2", params={"judge": "llm", "llm": {"choices": [" A", " A"]}})


def openai_params(server, **kw):
    return OpenAIParams(**{"base_url": server.url, "model": "tiny", "system": "", "template": LM_TEMPLATE,
                           "requests_per_minute": 6000, **kw})


def test_openai_judge_over_http_gives_the_local_judges_probabilities(judge_models, monkeypatch):
    monkeypatch.setenv("TEST_KEY", KEY)
    local = {j.key: j.p_a for j in LocalLMJudge(judge_models["answers"], "m", LLMParams()).judge(PAIRS)}
    with ChatServer(judge_models["answers"]) as server:
        judge = OpenAIJudge(openai_params(server, api_key_env="TEST_KEY", input_price_per_million=2.0,
                                          output_price_per_million=8.0), stage="labels")
        judged = {j.key: j for j in judge.judge(PAIRS)}
    assert server.requests == 2 * len(PAIRS)
    for key, j in judged.items():
        assert j.p_a == pytest.approx(local[key], abs=1e-5)
        assert j.raw["ab"]["answer"] and len(j.raw["ab"]["top_logprobs"]) == 20  # the raw answer is kept
        u = j.raw["usage"]
        assert u["requests"] == 2 and u["completion_tokens"] == 2 and u["prompt_tokens"] > 20
        assert u["cost_usd"] == pytest.approx((u["prompt_tokens"] * 2.0 + 2 * 8.0) / 1e6)


@pytest.mark.parametrize("status", [429, 500])
def test_openai_judge_retries_keeps_its_rate_limit_and_concurrency(judge_models, monkeypatch, status):
    monkeypatch.setenv("TEST_KEY", KEY)
    with ChatServer(judge_models["answers"], fail_first=3, fail_status=status, delay=0.05) as server:
        judge = OpenAIJudge(openai_params(server, api_key_env="TEST_KEY", concurrency=2, requests_per_minute=600),
                            stage="labels")
        judged = list(judge.judge(PAIRS))
    assert len(judged) == len(PAIRS) and server.requests == 2 * len(PAIRS) + 3
    assert sum(j.raw["usage"]["requests"] for j in judged) == server.requests
    assert server.max_in_flight <= 2
    gaps = [b - a for a, b in zip(server.starts, server.starts[1:], strict=False)]
    assert min(gaps) > 0.09  # 600 a minute: one every 0.1 s


def test_openai_judge_refuses_bad_config_and_gives_up_on_a_dead_endpoint(judge_models, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    with pytest.raises(StageFailed, match=r"params.openai.api_key_env: the environment variable NO_SUCH_KEY"):
        OpenAIJudge(OpenAIParams(model="m", api_key_env="NO_SUCH_KEY"), stage="labels")
    monkeypatch.setenv("TEST_KEY", "wrong")
    with ChatServer(judge_models["answers"]) as server:
        judge = OpenAIJudge(openai_params(server, api_key_env="TEST_KEY"), stage="labels")
        with pytest.raises(StageFailed, match=r"answered HTTP 401: .*invalid api key.*\$TEST_KEY"):
            list(judge.judge(PAIRS[:1]))
        assert server.requests == 1  # a 401 is not retried
        port = server.sock.getsockname()[1]
    dead = OpenAIJudge(OpenAIParams(base_url=f"http://127.0.0.1:{port}/v1", model="m", api_key_env="TEST_KEY",
                                    max_retries=2, requests_per_minute=6000), stage="labels")
    with pytest.raises(EndpointUnavailable, match="failed 3 times"):
        list(dead.judge(PAIRS[:1]))


def test_label_stage_with_the_openai_judge_totals_tokens_and_cost(judge_models, monkeypatch, tmp_path):
    monkeypatch.setenv("TEST_KEY", KEY)
    cands = tmp_path / "c.jsonl"
    cands.write_text("".join(json.dumps({"prompt": q.prompt, "responses": [q.a, q.b]}) + "\n" for q in PAIRS))
    out = tmp_path / "prefs"
    with ChatServer(judge_models["answers"]) as server:
        params = openai_params(server, api_key_env="TEST_KEY", input_price_per_million=1.0).model_dump()
        api.run_stage("label", inputs={"candidates": str(cands)}, out=out,
                      params={"judge": "openai", "openai": params, "max_skip_fraction": 1.0})
    summary = json.loads((out / "manifest.json").read_text())["summary"]
    raw = [json.loads(line) for line in (out / "raw_answers.jsonl").read_text().splitlines()]
    assert summary["judge"] == {"type": "openai", "base_url": server.url, "model": "tiny", "both_orders": True}
    assert summary["usage"]["requests"] == server.requests == 12
    assert summary["usage"]["prompt_tokens"] == sum(r["usage"]["prompt_tokens"] for r in raw)
    assert summary["usage"]["cost_usd"] == pytest.approx(summary["usage"]["prompt_tokens"] / 1e6)
    assert 0 < summary["ceiling_accuracy"] < 1  # probabilities, not 0/1 answers
    assert KEY not in (out / "manifest.json").read_text() + (out / "raw_answers.jsonl").read_text()
