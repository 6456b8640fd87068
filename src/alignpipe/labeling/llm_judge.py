"""`judge: llm`: a local causal LM compares two responses (imports torch and transformers when used).

The pairwise template (params.llm.template) is filled with the prompt and the two responses, and the model's
next-token distribution after it is read: P(A) = softmax over the logits of the two answers' first tokens
(params.llm.choices, " A" and " B"; tokens the two answers share, like a tokenizer's separate space, are appended
to the input first, so the compared tokens are where they differ). Language models prefer a position, so each
pair is asked twice, a then b and b then a; P(a better) = (P("A" | a, b) + P("B" | b, a)) / 2. A judge that
always answers "A" comes out at exactly 0.5, a tie. The raw answer kept per pair: both orders' P("A").

Inputs longer than params.llm.max_length (or the model's positions) keep their end, where the answer cue is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from alignpipe.judges import JudgeReport, Judgment, PairQuery
from alignpipe.labeling.params import LLMParams, fill
from alignpipe.pipeline.errors import StageFailed


class NextTokenScorer:
    """Next-token logits of a causal LM for a batch of texts: left-padded, position ids from the mask."""

    def __init__(self, model_dir: str, max_length: int):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        positions = getattr(self.model.config, "max_position_embeddings", None) or max_length
        self.max_length = min(max_length, positions)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.eos_token_id or 0)

    def ids(self, text: str, suffix: Sequence[int] = ()) -> list[int]:
        return (self.tokenizer(text, add_special_tokens=False)["input_ids"] + list(suffix))[-self.max_length:]

    def answer_tokens(self, first: str, second: str) -> tuple[list[int], int, int]:
        """(the tokens both answers begin with, first's next token, second's next token)."""
        x, y = (self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in (first, second))
        common = 0
        while common < min(len(x), len(y)) and x[common] == y[common]:
            common += 1
        if common == min(len(x), len(y)):
            raise ValueError(f"answers {first!r} and {second!r} do not differ in a token (one is the other's "
                             "start); choose answers that differ, e.g. ' A' and ' B'")
        return x[:common], x[common], y[common]

    def logits(self, texts: Sequence[str], suffix: Sequence[int] = ()) -> Any:
        """(len(texts), vocab) float32: the logits of the token after each text (followed by `suffix` tokens)."""
        torch = self.torch
        rows = [self.ids(t, suffix) for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding: every row's last column is its last real token
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions)
        return out.logits[:, -1, :].float()


class LocalLMJudge:
    def __init__(self, model_dir: str, model_id: str, params: LLMParams):
        self.model_dir, self.model_id, self.p = model_dir, model_id, params

    def describe(self) -> dict[str, Any]:
        return {"type": "llm", "model": self.model_id, "choices": list(self.p.choices), "both_orders": True}

    def report(self) -> JudgeReport:
        return JudgeReport()  # raw answers travel with each judgment (the stage writes raw_answers.jsonl)

    def judge(self, pairs: Sequence[PairQuery]) -> Iterator[Judgment]:
        scorer = NextTokenScorer(self.model_dir, self.p.max_length)
        try:
            shared, a_token, b_token = scorer.answer_tokens(*self.p.choices)
        except ValueError as e:
            raise StageFailed(f"params.llm.choices: {e}") from None
        for start in range(0, len(pairs), self.p.batch_size):
            batch = pairs[start:start + self.p.batch_size]
            texts = ([fill(self.p.template, q.prompt, q.a, q.b) for q in batch]
                     + [fill(self.p.template, q.prompt, q.b, q.a) for q in batch])
            logits = scorer.logits(texts, shared)[:, [a_token, b_token]]
            p_first = scorer.torch.softmax(logits, dim=-1)[:, 0].tolist()  # P("A")
            for q, p_ab, p_ba in zip(batch, p_first[:len(batch)], p_first[len(batch):], strict=True):
                p_a = (p_ab + (1.0 - p_ba)) / 2  # swapped, a sits in the "B" slot
                yield Judgment(q.key, None if p_a == 0.5 else p_a > 0.5, p_a=p_a,
                               raw={"p_first_ab": p_ab, "p_first_ba": p_ba})
