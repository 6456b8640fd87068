import copy

import pytest
import torch

from alignpipe.data import PromptCompletion
from alignpipe.data.tokenize import collate_lm, tokenize_sft
from alignpipe.models.build import apply_lora, load_causal_lm, unwrap
from alignpipe.train import evaluate_lm, lm_loss, make_adamw


@pytest.mark.parametrize("arch", ["gpt2", "llama"], ids=["gpt2", "llama"])
def test_lm_loss_equals_hf_labels_loss_on_right_padded_batches(arch, tiny_model_dirs, tiny_tokenizer):
    model = load_causal_lm(tiny_model_dirs[arch])
    samples = tokenize_sft(tiny_tokenizer, [PromptCompletion("Review of the lamp:", " It is great."),
                                            PromptCompletion("Thoughts on the mug:", " Bad.")], max_len=64)
    batch = collate_lm(samples, tiny_tokenizer.pad_token_id)
    loss, n = lm_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert n == sum(sum(x != -100 for x in s.labels[1:]) for s in samples)
    with torch.no_grad():
        hf = model(**batch).loss
    torch.testing.assert_close(loss.detach(), hf, atol=1e-5, rtol=0)
    assert evaluate_lm(model, [batch]) == float(loss.detach())


def test_lm_loss_head_on_labelled_rows_gives_the_full_gradient_and_works_through_lora(tiny_model_dirs,
                                                                                      tiny_tokenizer):
    samples = tokenize_sft(tiny_tokenizer, [PromptCompletion("Review of the lamp:", " It is great."),
                                            PromptCompletion("Thoughts on the mug:", " Bad.")], max_len=64)
    batch = collate_lm(samples, tiny_tokenizer.pad_token_id)
    model = load_causal_lm(tiny_model_dirs["gpt2"])
    lm_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"])[0].backward()
    ref = copy.deepcopy(model)
    for p in ref.parameters():
        p.grad = None
    ref(**batch).loss.backward()
    for (name, a), b in zip(model.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)
    lora = apply_lora(load_causal_lm(tiny_model_dirs["gpt2"]))
    loss, _ = lm_loss(lora, batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert torch.isfinite(loss) and not any(h for h in unwrap(lora).get_output_embeddings()._forward_pre_hooks)


def test_make_adamw_is_fused_on_cpu(tiny_model_dirs):
    opt = make_adamw(load_causal_lm(tiny_model_dirs["gpt2"]), lr=1e-3)
    assert all(g["fused"] for g in opt.param_groups)


def test_make_adamw_decays_matrices_only(tiny_model_dirs):
    model = load_causal_lm(tiny_model_dirs["gpt2"])
    opt = make_adamw(model, lr=1e-3, weight_decay=0.1)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.ndim >= 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.ndim < 2 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))
