import copy

import pytest
import torch
import torch.nn.functional as F

from alignpipe.models.build import apply_lora, load_causal_lm, reward_model_from_causal
from alignpipe.models.forward import (
    _filter_top_p,
    _sample_step,
    check_ids_in_vocab,
    check_tokenizers_compatible,
    collate_prompt_response,
    eos_mask,
    inverse_cdf_sample,
    last_token_index,
    pad_left,
    position_ids_from_mask,
    response_logprobs,
    sample_responses,
    score_sequences,
    value_sequences,
)
from alignpipe.models.lean import supports as lean_path
from alignpipe.models.tokenizer import train_tokenizer

from . import variants

ARCHS = ["gpt2", "llama"]
PROMPTS = ["Review of the lamp:", "Hi", "My review of the cheap red toaster:"]
RESPONSES = [" It is great.", " Bad", " It works well but the lid is weak. I am disappointed."]


@pytest.fixture(scope="module")
def models(tiny_model_dirs):
    return {a: (load_causal_lm(d), reward_model_from_causal(d)) for a, d in tiny_model_dirs.items()}


def _batch(tok, prompts=PROMPTS, responses=RESPONSES):
    p = [tok(x)["input_ids"] for x in prompts]
    r = [tok(x, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for x in responses]
    return collate_prompt_response(p, r, tok.pad_token_id)


# -- item 1 / 2: masks, pooling index, layout -----------------------------------------------------------------------
def test_response_mask_and_pool_index_stop_at_first_eos():
    EOS, PAD = 1, 2
    resp = torch.tensor([[7, 8, EOS, PAD, PAD], [7, PAD, 8, EOS, PAD], [7, 8, 9, 10, 11], [EOS, PAD, PAD, PAD, PAD]])
    mask = eos_mask(resp, EOS)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert last_token_index(mask).tolist() == [2, 3, 4, 0]  # a sampled pad id before EOS is a real token


def test_pad_left_and_prompt_response_layout(tiny_tokenizer):
    ids, mask = pad_left([[5, 6, 7], [8]], pad_id=2)
    assert ids.tolist() == [[5, 6, 7], [2, 2, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    b = collate_prompt_response([[5, 6, 7], [8]], [[9, 1], [10, 11, 1]], pad_id=2)
    assert b.input_ids.tolist() == [[5, 6, 7, 9, 1, 2], [2, 2, 8, 10, 11, 1]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert b.prompt_len == 3 and b.input_ids[1, b.prompt_len + 1] == 11  # response token i at column P + i
    assert b.responses() == [[9, 1], [10, 11, 1]] and b.ended(1).tolist() == [True, True]


def test_position_ids_follow_the_mask():
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2, 2], [0, 1, 2, 3, 4, 5]]


def test_no_id_outside_the_vocabulary_reaches_the_model(models, tiny_tokenizer):
    lm, rm = models["gpt2"]
    b = _batch(tiny_tokenizer)
    assert int(b.input_ids.max()) < lm.get_input_embeddings().num_embeddings
    bad = b.input_ids.clone()
    bad[0, -1] = lm.get_input_embeddings().num_embeddings
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        response_logprobs(lm, bad, b.attention_mask, b.prompt_len)
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        score_sequences(rm, bad, b.attention_mask)
    with pytest.raises(ValueError, match="outside"):
        check_ids_in_vocab(lm, torch.tensor([[-1]]))


# -- item 3: padding invariance --------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_padding_invariance_of_logprobs_values_and_scores(arch, models, tiny_tokenizer):
    lm, rm = models[arch]
    batch = _batch(tiny_tokenizer)
    assert batch.prompt_mask[:, 0].tolist() != [1, 1, 1]  # some rows really are left-padded
    with torch.no_grad():
        logp, ent = response_logprobs(lm, batch.input_ids, batch.attention_mask, batch.prompt_len, 0.7)
        values = value_sequences(rm, batch.input_ids, batch.attention_mask, batch.prompt_len)
        scores = score_sequences(rm, batch.input_ids, batch.attention_mask)
        for i in range(len(PROMPTS)):
            alone = _batch(tiny_tokenizer, PROMPTS[i : i + 1], RESPONSES[i : i + 1])
            t = alone.response_ids.shape[1]
            logp1, ent1 = response_logprobs(lm, alone.input_ids, alone.attention_mask, alone.prompt_len, 0.7)
            torch.testing.assert_close(logp[i, :t], logp1[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(ent[i, :t], ent1[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(
                values[i, :t], value_sequences(rm, alone.input_ids, alone.attention_mask, alone.prompt_len)[0],
                atol=1e-5, rtol=0,
            )
            torch.testing.assert_close(scores[i], score_sequences(rm, alone.input_ids, alone.attention_mask)[0],
                                       atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_value_of_step_i_is_the_score_of_the_prefix_before_token_i(arch, models, tiny_tokenizer):
    _, critic = models[arch]
    b = _batch(tiny_tokenizer)
    with torch.no_grad():
        values = value_sequences(critic, b.input_ids, b.attention_mask, b.prompt_len)  # (B, T)
        for i in range(b.response_ids.shape[1]):
            prefix_mask = b.attention_mask[:, : b.prompt_len + i]
            before = score_sequences(critic, b.input_ids[:, : b.prompt_len + i], prefix_mask)  # (B,)
            valid = b.response_mask[:, i].bool()
            torch.testing.assert_close(values[valid, i], before[valid], atol=1e-5, rtol=0)


# -- item 4: off-by-one ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_response_logprobs_match_hf_labels_loss(arch, models, tiny_tokenizer):
    lm, _ = models[arch]
    b = _batch(tiny_tokenizer)
    mask = b.response_mask.bool()
    labels = torch.cat([torch.full_like(b.prompt_ids, -100), b.response_ids.masked_fill(~mask, -100)], dim=1)
    with torch.no_grad():
        logp, _ = response_logprobs(lm, b.input_ids, b.attention_mask, b.prompt_len, temperature=1.0)
        hf_loss = lm(input_ids=b.input_ids, attention_mask=b.attention_mask,
                     position_ids=position_ids_from_mask(b.attention_mask), labels=labels).loss
    n_labels = int(mask.sum())
    torch.testing.assert_close(-logp[mask].sum(), hf_loss * n_labels, atol=1e-4, rtol=1e-6)


# -- item 6: temperature ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tau", [0.7, 1.0], ids=["tau0.7", "tau1"])
@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_logprobs_are_log_softmax_of_logits_over_tau(arch, tau, models, tiny_tokenizer):
    lm, _ = models[arch]
    b = _batch(tiny_tokenizer)
    with torch.no_grad():
        logp, ent = response_logprobs(lm, b.input_ids, b.attention_mask, b.prompt_len, temperature=tau)
        logits = lm(input_ids=b.input_ids, attention_mask=b.attention_mask,
                    position_ids=position_ids_from_mask(b.attention_mask)).logits  # (B, L, V)
    P, T = b.prompt_len, b.response_ids.shape[1]
    dist = F.log_softmax(logits[:, P - 1 : P - 1 + T] / tau, dim=-1)  # (B, T, V)
    expected = dist.gather(2, b.response_ids.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logp, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(ent, -(dist.exp() * dist).sum(-1), atol=1e-5, rtol=0)
    if tau != 1.0:
        untempered, _ = response_logprobs(lm, b.input_ids, b.attention_mask, b.prompt_len, temperature=1.0)
        assert (untempered - logp).abs().max() > 1e-3


# -- item 5: sampling -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_sampler_logprobs_match_training_forward_despite_model_generation_config(arch, tiny_model_dirs,
                                                                                tiny_tokenizer):
    lm = load_causal_lm(tiny_model_dirs[arch])
    # A generation_config.json that would make sampling greedy, penalized and censored if it leaked in.
    lm.generation_config.top_k = 1
    lm.generation_config.repetition_penalty = 5.0
    lm.generation_config.min_new_tokens = 8
    lm.generation_config.suppress_tokens = list(range(10, 60))
    prompts = [tiny_tokenizer(p)["input_ids"] for p in PROMPTS]
    g = sample_responses(lm, tiny_tokenizer, prompts, n=4, temperature=0.7, max_new_tokens=10, seed=0,
                         return_logprobs=True)
    assert lm.generation_config.top_k == 1  # restored
    assert g.input_ids.shape == (12, g.prompt_len + g.response_ids.shape[1])
    assert len({tuple(r) for r in g.responses()[:4]}) > 1  # not greedy
    with torch.no_grad():
        logp, _ = response_logprobs(lm, g.input_ids, g.attention_mask, g.prompt_len, temperature=0.7)
    valid = g.response_mask.bool()
    torch.testing.assert_close(logp[valid], g.sampler_logprobs[valid], atol=1e-4, rtol=0)
    for i in range(3):  # prompt-major rows: row i·n + j is a sample of prompt i
        assert g.prompt_ids[4 * i][g.prompt_mask[4 * i].bool()].tolist() == prompts[i]


def test_sampling_pads_after_eos_is_seeded_and_keeps_global_rng(tiny_model_dirs, tiny_tokenizer):
    lm = load_causal_lm(tiny_model_dirs["gpt2"])
    eos, pad = tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id
    eos_bias = torch.zeros(len(tiny_tokenizer))
    eos_bias[eos] = 3.5  # P(EOS) ≈ 8% per step: some rows finish within 12 tokens, some do not
    lm.lm_head.register_forward_hook(lambda module, args, out: out + eos_bias)
    prompts = [tiny_tokenizer(p)["input_ids"] for p in PROMPTS]
    state = torch.random.get_rng_state()
    a = sample_responses(lm, tiny_tokenizer, prompts, n=5, temperature=1.0, max_new_tokens=12, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = sample_responses(lm, tiny_tokenizer, prompts, n=5, temperature=1.0, max_new_tokens=12, seed=7)
    c = sample_responses(lm, tiny_tokenizer, prompts, n=5, temperature=1.0, max_new_tokens=12, seed=8)
    assert torch.equal(a.response_ids, b.response_ids) and not torch.equal(a.response_ids, c.response_ids)
    ended = a.ended(eos)
    assert 0 < int(ended.sum()) < len(ended)
    for row, m, done in zip(a.response_ids, a.response_mask, ended, strict=True):
        n_valid = int(m.sum())
        assert (row[n_valid:] == pad).all()
        assert (row[n_valid - 1] == eos) == bool(done)


@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_lora_wrapped_models_go_through_the_same_plumbing(arch, tiny_model_dirs, tiny_tokenizer):
    policy = apply_lora(load_causal_lm(tiny_model_dirs[arch]), r=2, alpha=4)
    critic = apply_lora(reward_model_from_causal(tiny_model_dirs[arch]), r=2, alpha=4)
    prompts = [tiny_tokenizer(p)["input_ids"] for p in PROMPTS]
    g = sample_responses(policy, tiny_tokenizer, prompts, n=2, temperature=0.7, max_new_tokens=6, seed=0,
                         return_logprobs=True)
    logp, _ = response_logprobs(policy, g.input_ids, g.attention_mask, g.prompt_len, temperature=0.7)
    valid = g.response_mask.bool()
    torch.testing.assert_close(logp[valid], g.sampler_logprobs[valid], atol=1e-4, rtol=0)
    logp.sum().backward()
    assert all(p.grad is not None for n, p in policy.named_parameters() if p.requires_grad)
    values = value_sequences(critic, g.input_ids, g.attention_mask, g.prompt_len)
    assert values.shape == g.response_ids.shape
    values.sum().backward()
    assert all(p.grad is not None for n, p in critic.named_parameters() if p.requires_grad)


# -- tokenizer compatibility -----------------------------------------------------------------------------------------
def test_check_tokenizers_compatible(tiny_tokenizer):
    check_tokenizers_compatible({"policy": tiny_tokenizer, "reference": copy.deepcopy(tiny_tokenizer)})
    other = train_tokenizer(["completely different text about cats and dogs"] * 20, vocab_size=300)
    with pytest.raises(ValueError, match=r"tokenizers of 'policy' and 'reward' are incompatible: .*vocabulary"):
        check_tokenizers_compatible({"policy": tiny_tokenizer, "critic": tiny_tokenizer, "reward": other})
    swapped = copy.deepcopy(tiny_tokenizer)
    swapped.pad_token = swapped.unk_token
    with pytest.raises(ValueError, match=r"pad_token_id 2 \(policy\) vs 3 \(reward\)"):
        check_tokenizers_compatible({"policy": tiny_tokenizer, "reward": swapped})
    same_as_eos = copy.deepcopy(tiny_tokenizer)
    same_as_eos.pad_token = same_as_eos.eos_token
    with pytest.raises(ValueError, match="tokenizer of 'sft' has pad_token_id 1 = eos"):
        check_tokenizers_compatible({"sft": same_as_eos})


def test_fused_kernels_keep_the_function_and_the_saved_model(tiny_model_dirs, tiny_tokenizer, tmp_path):
    from transformers.activations import NewGELUActivation

    from alignpipe.models.build import save_model
    from alignpipe.models.forward import use_fused_kernels

    plain = load_causal_lm(tiny_model_dirs["gpt2"])
    fused = use_fused_kernels(load_causal_lm(tiny_model_dirs["gpt2"]))
    assert not any(isinstance(m, NewGELUActivation) for m in fused.modules())
    ids = torch.tensor([tiny_tokenizer("Review of the lamp: It is great.")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(fused(input_ids=ids).logits, plain(input_ids=ids).logits, atol=1e-5, rtol=0)
    save_model(fused, tiny_tokenizer, tmp_path / "m")
    assert load_causal_lm(tmp_path / "m").config.activation_function == plain.config.activation_function


# -- the sampling loop's own pieces (item 5) ---------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_inverse_cdf_step_samples_softmax_over_temperature(temperature):
    logits = torch.tensor([2.0, 0.5, float("-inf"), -1.0, 1.5, float("-inf")])
    torch.manual_seed(0)
    n = 200_000
    tokens, logp = _sample_step(logits.expand(n, -1), temperature, top_p=1.0, logprobs=True)
    want = torch.softmax(logits / temperature, dim=-1)
    got = torch.bincount(tokens, minlength=len(logits)).double() / n
    assert got[2] == 0 and got[5] == 0  # zero-probability tokens are never drawn
    assert float((got - want).abs().sum()) / 2 < 0.005  # total variation; sampling noise is ~0.001 here
    torch.testing.assert_close(logp[0], torch.log_softmax(logits / temperature, dim=-1))


def test_inverse_cdf_gives_a_rare_token_of_a_large_vocabulary_its_share():
    """A token with weight 1e-3 after 99,999 tokens of weight 1: in a float32 cumulative sum (ulp 0.008 there) its
    interval has zero width and it is never drawn (at V = 150k, ~30% of a real distribution's tokens are lost this
    way); the float64 sum keeps it."""
    v, rare = 100_000, 99_999
    weights = torch.ones(1, v)
    weights[0, rare] = 1e-3
    total = (v - 1) + 1e-3
    inside = torch.tensor([[(rare + 0.0005) / total]], dtype=torch.float64)  # the middle of its exact interval
    assert inverse_cdf_sample(weights, inside).item() == rare
    assert inverse_cdf_sample(weights, torch.tensor([[0.5]], dtype=torch.float64)).item() == 49_999
    cdf32 = weights.cumsum(-1)
    assert cdf32[0, rare] == cdf32[0, rare - 1]  # the float32 failure this guards against


@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 0.99])
def test_nucleus_filter_equals_transformers_top_p_warper(top_p):
    from transformers.generation.logits_process import TopPLogitsWarper

    torch.manual_seed(1)
    logits = torch.randn(16, 50) * 2
    theirs = TopPLogitsWarper(top_p)(None, logits.clone())
    assert torch.equal(torch.isinf(_filter_top_p(logits, top_p)), torch.isinf(theirs))
    tokens, _ = _sample_step(logits.repeat(200, 1), 1.0, top_p)
    assert not torch.isinf(theirs.repeat(200, 1).gather(1, tokens[:, None])).any()  # only nucleus tokens drawn


def test_sampling_stops_when_every_row_ended(tiny_model_dirs, tiny_tokenizer):
    lm = load_causal_lm(tiny_model_dirs["llama"])
    eos_bias = torch.zeros(len(tiny_tokenizer))
    eos_bias[tiny_tokenizer.eos_token_id] = 50.0  # every row emits EOS first
    lm.lm_head.register_forward_hook(lambda module, args, out: out + eos_bias)
    g = sample_responses(lm, tiny_tokenizer, [tiny_tokenizer(p)["input_ids"] for p in PROMPTS], n=2,
                         max_new_tokens=12, seed=0)
    assert g.response_ids.shape == (6, 1) and (g.response_ids == tiny_tokenizer.eos_token_id).all()


@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_length_chunks_cut_unused_columns_and_match_the_whole_batch(arch, models, tiny_tokenizer):
    lm, rm = models[arch]
    prompts = PROMPTS * 2
    responses = [r * k for k in (1, 2) for r in RESPONSES]  # 6 rows of very different lengths
    batch = _batch(tiny_tokenizer, prompts, responses)
    short = batch.select(torch.tensor([1, 0]))  # two short rows: prompt pads and long responses cut away
    assert short.response_ids.shape[1] == int(batch.response_mask[[0, 1]].sum(1).max())
    assert short.prompt_ids.shape[1] == max(len(tiny_tokenizer(p)["input_ids"]) for p in PROMPTS[:2])
    assert short.prompt_ids[0].tolist() == batch.prompt_ids[1, -short.prompt_len:].tolist()
    with torch.no_grad():
        whole = response_logprobs(lm, batch.input_ids, batch.attention_mask, batch.prompt_len, 0.7)
        chunked = batch.map_by_length(lambda sub: response_logprobs(lm, sub.input_ids, sub.attention_mask,
                                                                    sub.prompt_len, 0.7), rows_per_chunk=2)
        scores = score_sequences(rm, batch.input_ids, batch.attention_mask)
        (chunk_scores,) = batch.map_by_length(lambda sub: (score_sequences(rm, sub.input_ids, sub.attention_mask),),
                                              rows_per_chunk=4)
    valid = batch.response_mask.bool()
    for w, c in zip(whole, chunked, strict=True):
        assert c.shape == w.shape  # masked columns: meaningless, as for the whole batch
        torch.testing.assert_close(c[valid], w[valid], atol=1e-5, rtol=0)
    torch.testing.assert_close(chunk_scores, scores, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_logprobs_without_entropy_equal_the_full_log_softmax(arch, models, tiny_tokenizer):
    lm, _ = models[arch]
    batch = _batch(tiny_tokenizer)
    with torch.no_grad():
        full, ent = response_logprobs(lm, batch.input_ids, batch.attention_mask, batch.prompt_len, 0.7)
        lean, none = response_logprobs(lm, batch.input_ids, batch.attention_mask, batch.prompt_len, 0.7,
                                       entropy=False)
    assert none is None and ent.shape == full.shape
    torch.testing.assert_close(lean, full, atol=1e-5, rtol=0)


# -- models.kv: the lean decoding path against transformers' ----------------------------------------------------------
@pytest.mark.parametrize("case", variants.NAMES)
def test_lean_decoding_steps_equal_transformers_forward_with_its_cache(case, tiny_model_dirs, tiny_tokenizer):
    from alignpipe.models.kv import HFStepper, LeanStepper

    lm = variants.variant(case, tiny_model_dirs).eval()
    assert lean_path(lm)
    prompt_ids, prompt_mask = pad_left([tiny_tokenizer(p)["input_ids"] for p in PROMPTS], tiny_tokenizer.pad_token_id)
    positions = position_ids_from_mask(prompt_mask)
    capacity = prompt_ids.shape[1] + 5
    lean, hf = LeanStepper(lm, prompt_mask, capacity), HFStepper(lm, prompt_mask, capacity)
    with torch.no_grad():
        a, b = lean(prompt_ids, positions), hf(prompt_ids, positions)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        assert torch.isfinite(a).all()
        for t in range(5):
            step = a.argmax(-1)[:, None]  # (B, 1)
            pos = positions[:, -1:] + 1 + t
            a, b = lean(step, pos), hf(step, pos)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=f"step {t}")


def test_sampler_draws_the_same_tokens_on_either_path_and_stops_computing_ended_rows(
        tiny_model_dirs, tiny_tokenizer, monkeypatch):
    import alignpipe.models.kv as kv

    lm = load_causal_lm(tiny_model_dirs["llama"])
    eos_bias = torch.zeros(len(tiny_tokenizer))
    eos_bias[tiny_tokenizer.eos_token_id] = 3.0  # rows end at different steps
    rows_seen = []
    lm.lm_head.register_forward_hook(lambda module, args, out: (rows_seen.append(out.shape[0]), out + eos_bias)[1])
    prompts = [tiny_tokenizer(p)["input_ids"] for p in PROMPTS]
    lean = sample_responses(lm, tiny_tokenizer, prompts, n=8, temperature=1.0, max_new_tokens=16, seed=3,
                            return_logprobs=True)
    lean_rows, rows_seen[:] = list(rows_seen), []
    monkeypatch.setattr(kv.lean, "supports", lambda model: False)  # transformers for every forward
    hf = sample_responses(lm, tiny_tokenizer, prompts, n=8, temperature=1.0, max_new_tokens=16, seed=3)
    assert torch.equal(lean.response_ids, hf.response_ids) and lean_rows == rows_seen
    lengths = lean.response_mask.sum(1)
    assert lean_rows[0] == 24 and lean_rows[-1] < 24  # ended rows left the batch the model runs
    assert lengths.min() < lengths.max() == lean.response_ids.shape[1]
    # every computed row-step belongs to a row that had not ended (at most a quarter may linger)
    assert sum(lean_rows[1:]) <= 4 / 3 * (int(lengths.sum()) - len(lengths)) + len(lengths)
    with torch.no_grad():  # the dropped rows' logprobs were taken before they left
        logp, _ = response_logprobs(lm, lean.input_ids, lean.attention_mask, lean.prompt_len, temperature=1.0)
    valid = lean.response_mask.bool()
    torch.testing.assert_close(logp[valid], lean.sampler_logprobs[valid], atol=1e-4, rtol=0)
    monkeypatch.undo()
    upcast = load_causal_lm(tiny_model_dirs["gpt2"])
    upcast.config.reorder_and_upcast_attn = True  # an attention variant the lean path does not implement
    assert not lean_path(upcast)
    assert isinstance(kv.stepper(upcast, torch.ones(1, 2, dtype=torch.long), 4), kv.HFStepper)


@pytest.mark.parametrize("arch", ARCHS, ids=ARCHS)
def test_right_padded_rows_score_as_the_prompt_response_layout(arch, models, tiny_tokenizer):
    from alignpipe.data.tokenize import PreferenceSample, collate_preferences, preference_rows

    _, rm = models[arch]
    tok = tiny_tokenizer
    def response(text):
        return tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]

    samples = [PreferenceSample(tok(p)["input_ids"], response(a), response(b))
               for p, a, b in zip(PROMPTS, RESPONSES, reversed(RESPONSES), strict=True)]
    ids, mask = preference_rows(samples, tok.pad_token_id)
    assert ids.shape[1] == max(len(s.prompt_ids) + max(len(s.chosen_ids), len(s.rejected_ids)) for s in samples)
    batch = collate_preferences(samples, tok.pad_token_id)
    with torch.no_grad():
        fast = score_sequences(rm, ids, mask, right_padded=True)
        ref = score_sequences(rm, batch.input_ids, batch.attention_mask)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="real tokens first"):
        score_sequences(rm, batch.input_ids, batch.attention_mask, right_padded=True)  # left-padded prompts


def test_shares_sampled_together_draw_the_whole_batchs_tokens(tiny_model_dirs, tiny_tokenizer):
    """Three shares of one batch (data-parallel actor replicas, here threads exchanging their counts through a
    barrier) get the tokens of one process sampling the whole batch from the same seed: the same uniforms per row,
    ended rows dropped at the same steps, one stopping step — also for a share whose rows all end early."""
    import threading

    from alignpipe.models.forward import BatchShare

    lm = load_causal_lm(tiny_model_dirs["llama"])
    eos_bias = torch.zeros(len(tiny_tokenizer))
    eos_bias[tiny_tokenizer.eos_token_id] = 3.0  # rows end at different steps
    lm.lm_head.register_forward_hook(lambda module, args, out: out + eos_bias)
    prompts = [tiny_tokenizer(p)["input_ids"] for p in PROMPTS] * 6  # 18 rows
    whole = sample_responses(lm, tiny_tokenizer, prompts, temperature=1.0, max_new_tokens=16, seed=5)
    bounds = [(0, 4), (4, 5), (5, 18)]  # the one-row share runs out of rows while the others go on
    counts: list = [None] * len(bounds)
    barrier = threading.Barrier(len(bounds))

    def gather(rank: int, active: int, ended: int) -> list[tuple[int, int]]:
        counts[rank] = (active, ended)
        barrier.wait()
        out = list(counts)
        barrier.wait()  # every share has read this step's counts before any writes the next
        return out

    shares: list = [None] * len(bounds)

    def sample(rank: int) -> None:
        start, stop = bounds[rank]
        share = BatchShare(rank, lambda a, e: gather(rank, a, e))
        shares[rank] = sample_responses(lm, tiny_tokenizer, prompts[start:stop], temperature=1.0,
                                        max_new_tokens=16, seed=5, share=share)

    threads = [threading.Thread(target=sample, args=(r,)) for r in range(len(bounds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    lengths = whole.response_mask.sum(1)
    assert lengths[4] < lengths.max() // 2  # the one-row share ended long before the batch
    assert all(s.response_ids.shape[1] == whole.response_ids.shape[1] for s in shares)
    assert torch.equal(torch.cat([s.response_ids for s in shares]), whole.response_ids)
