"""models.lean.pair_scores: one row per preference pair, last layer at the pooled tokens only — against scoring
each response after its prompt in its own row through transformers."""

import pytest
import torch

from alignpipe.data.tokenize import PreferenceSample, collate_preferences
from alignpipe.models import lean
from alignpipe.models.build import reward_model_from_causal
from alignpipe.models.forward import score_sequences
from alignpipe.models.scoring import preference_length, preference_scores
from alignpipe.rl.losses import reward_model_loss

from . import variants

PROMPTS = ["Review of the lamp:", "Hi", "My review of the cheap red toaster:", "Lid"]
CHOSEN = [" It is great.", " Bad", " It works well but the lid is weak. I am disappointed.", " Fine"]
REJECTED = [" No", " It broke after a week and the seller never answered.", " Meh.", " Fine"]


def _samples(tok):
    def response(text):
        return tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]

    return [PreferenceSample(tok(p)["input_ids"], response(c), response(r))
            for p, c, r in zip(PROMPTS, CHOSEN, REJECTED, strict=True)]


def _reference(rm, samples, pad_id):
    """Each response scored after its prompt in its own (left-padded prompt, right-padded response) row."""
    batch = collate_preferences(samples, pad_id)
    return score_sequences(rm, batch.input_ids, batch.attention_mask).chunk(2)


@pytest.mark.parametrize("case", variants.NAMES)
def test_pair_rows_give_the_scores_and_gradients_of_separate_rows(case, tiny_model_dirs, tiny_tokenizer):
    rm = variants.variant(case, tiny_model_dirs, reward=True).train()
    assert lean.supports(rm)
    samples = _samples(tiny_tokenizer)
    pairs = lean.pack_pairs(samples, tiny_tokenizer.pad_token_id)
    assert pairs.input_ids.shape[1] == max(preference_length(s, packed=True) for s in samples)
    assert pairs.tokens == sum(preference_length(s, packed=True) for s in samples)  # each prompt once

    grads = []
    for scores in (lambda: lean.pair_scores(rm, pairs), lambda: _reference(rm, samples, tiny_tokenizer.pad_token_id)):
        rm.zero_grad(set_to_none=True)
        chosen, rejected = scores()
        reward_model_loss(chosen, rejected, center_coef=0.01).backward()
        grads.append({n: p.grad.clone() for n, p in rm.named_parameters() if p.requires_grad})
        grads[-1]["scores"] = torch.cat([chosen, rejected]).detach()
    fast, ref = grads
    assert fast.keys() == ref.keys()
    for name in ref:
        torch.testing.assert_close(fast[name], ref[name], atol=1e-5, rtol=1e-4, msg=name)
    assert ref["scores"].std() > 0  # a random head still separates the responses


def test_a_response_does_not_see_the_other_response(tiny_model_dirs, tiny_tokenizer):
    rm = reward_model_from_causal(tiny_model_dirs["gpt2"]).eval()
    samples = _samples(tiny_tokenizer)
    other = [PreferenceSample(s.prompt_ids, s.chosen_ids[::-1], s.rejected_ids) for s in samples]
    pad = tiny_tokenizer.pad_token_id
    with torch.no_grad():
        (c1, r1), (c2, r2) = lean.pair_scores(rm, lean.pack_pairs(samples, pad)), lean.pair_scores(
            rm, lean.pack_pairs(other, pad))
    torch.testing.assert_close(r1, r2, atol=1e-6, rtol=0)  # rejected unchanged although chosen came before it
    assert not torch.allclose(c1, c2)


def test_unsupported_architectures_score_pairs_as_two_rows(tiny_model_dirs, tiny_tokenizer):
    rm = reward_model_from_causal(tiny_model_dirs["gpt2"])
    rm.config.reorder_and_upcast_attn = True  # an attention variant models.lean does not implement
    assert not lean.supports(rm)
    samples = _samples(tiny_tokenizer)
    with torch.no_grad():
        chosen, rejected, tokens = preference_scores(rm, samples, tiny_tokenizer.pad_token_id)
        ref_chosen, ref_rejected = _reference(rm, samples, tiny_tokenizer.pad_token_id)
    assert tokens == sum(len(s.prompt_ids) * 2 + len(s.chosen_ids) + len(s.rejected_ids) for s in samples)
    torch.testing.assert_close(chosen, ref_chosen, atol=1e-5, rtol=0)
    torch.testing.assert_close(rejected, ref_rejected, atol=1e-5, rtol=0)


# -- the PPO layout: left-padded prompts, right-padded responses --------------------------------------------------
def _prompt_response_batch(tok):
    from alignpipe.models.forward import collate_prompt_response

    responses = [tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in CHOSEN]
    return collate_prompt_response([tok(p)["input_ids"] for p in PROMPTS], responses, tok.pad_token_id)


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("case", variants.NAMES)
def test_logprobs_values_and_scores_equal_transformers_forward_with_the_last_layer_cut(
        case, tiny_model_dirs, tiny_tokenizer):
    import torch.nn.functional as F

    from alignpipe.models.build import score_head, unwrap
    from alignpipe.models.forward import position_ids_from_mask, response_logprobs, value_sequences

    b = _prompt_response_batch(tiny_tokenizer)
    P, ids, mask = b.prompt_len, b.input_ids, b.attention_mask
    valid = b.response_mask.bool()
    kw = {"attention_mask": mask, "position_ids": position_ids_from_mask(mask), "use_cache": False}

    lm = variants.variant(case, tiny_model_dirs).train()
    assert lean.supports(lm)
    logp, _ = response_logprobs(lm, ids, mask, P, temperature=0.7)
    ours = _grads(lm, logp[valid].sum())
    dist = F.log_softmax(lm(input_ids=ids, **kw).logits[:, P - 1 : -1] / 0.7, dim=-1)
    expected = dist.gather(2, b.response_ids.unsqueeze(-1)).squeeze(-1)
    theirs = _grads(lm, expected[valid].sum())
    torch.testing.assert_close(logp[valid], expected[valid].detach(), atol=1e-5, rtol=0)
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-5, rtol=1e-4, msg=name)

    rm = variants.variant(case, tiny_model_dirs, reward=True).train()
    hidden = unwrap(rm).base_model(input_ids=ids, **kw).last_hidden_state
    head_out = score_head(rm)(hidden).squeeze(-1)  # (B, L)
    values, scores = value_sequences(rm, ids, mask, P), score_sequences(rm, ids, mask)
    ours = _grads(rm, values[valid].sum() + scores.sum())
    last = mask.shape[1] - 1 - mask.flip(1).argmax(1)  # the last real column of each row
    ref_values, ref_scores = head_out[:, P - 1 : -1], head_out[torch.arange(len(last)), last]
    theirs = _grads(rm, ref_values[valid].sum() + ref_scores.sum())
    torch.testing.assert_close(values[valid], ref_values[valid].detach(), atol=1e-5, rtol=0)
    torch.testing.assert_close(scores, ref_scores.detach(), atol=1e-5, rtol=0)
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-5, rtol=1e-4, msg=name)
