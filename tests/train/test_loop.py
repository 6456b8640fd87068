import torch

from alignpipe.data import PromptCompletion
from alignpipe.data.tokenize import collate_lm, tokenize_sft
from alignpipe.models.build import load_causal_lm
from alignpipe.train import evaluate_lm, lm_loss, make_adamw


def test_lm_loss_equals_hf_labels_loss_on_right_padded_batches(tiny_model_dirs, tiny_tokenizer):
    model = load_causal_lm(tiny_model_dirs["llama"])
    samples = tokenize_sft(tiny_tokenizer, [PromptCompletion("Review of the lamp:", " It is great."),
                                            PromptCompletion("Thoughts on the mug:", " Bad.")], max_len=64)
    batch = collate_lm(samples, tiny_tokenizer.pad_token_id)
    loss, n = lm_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert n == sum(sum(x != -100 for x in s.labels[1:]) for s in samples)
    with torch.no_grad():
        hf = model(**batch).loss
    torch.testing.assert_close(loss.detach(), hf, atol=1e-5, rtol=0)
    assert evaluate_lm(model, [batch]) == float(loss.detach())


def test_make_adamw_decays_matrices_only(tiny_model_dirs):
    model = load_causal_lm(tiny_model_dirs["gpt2"])
    opt = make_adamw(model, lr=1e-3, weight_decay=0.1)
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.ndim >= 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.ndim < 2 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))
