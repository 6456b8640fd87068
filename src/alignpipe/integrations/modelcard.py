"""The model card (README.md) of a published model: what it is, how to load it, data, stages, metrics, lineage.

Hugging Face reads the YAML header (library, pipeline tag, tags); the license is left to the user: alignpipe cannot
know the terms of the data and base model a team used.
"""

from __future__ import annotations

import json
from typing import Any

from alignpipe.integrations.artifact import ModelArtifact


def model_card(m: ModelArtifact) -> str:
    """README.md text for the model directory of `m`."""
    p = m.producer
    sections = [
        _header(m),
        f"# {m.role.symbol} — `{m.ref}` of pipeline `{p.get('pipeline')}`\n\n{m.role.what}\n"
        f"{_purpose(m)}",
        _load(m),
        _metrics(m),
        _training(m),
        _data(m),
        _lineage(m),
        _params(m),
        "## License\n\nNot set: alignpipe does not know the terms of your data and base model. Add a `license:` "
        "field to the header above (e.g. `license: apache-2.0`) before sharing this model.\n",
    ]
    return "\n".join(s for s in sections if s)


def _header(m: ModelArtifact) -> str:
    tags = ["alignpipe", "rlhf", m.role.symbol.replace("π", "pi-").replace("φ", "phi").replace(" ", "-")]
    return ("---\nlibrary_name: transformers\n"
            f"pipeline_tag: {m.task}\n"
            f"tags: [{', '.join(tags)}]\n"
            "# license: set it here before sharing (see the License section)\n---\n")


def _purpose(m: ModelArtifact) -> str:
    """Role-specific facts a user needs: Rφ's score and normalization, πRLHF's β and KL."""
    s, params = m.summary, m.manifest.get("params", {})
    if m.role.symbol == "Rφ":
        return _reward_section(m)
    if m.role.symbol == "πRLHF":
        target = f" (adaptive β, KL target {params.get('kl_target')} nats)" if params.get("kl_control") == "adaptive" \
            else " (fixed β)"
        lines = [f"\nKL penalty: final β = {_num(s.get('beta'))}{target}; KL to πSFT at the last rollout "
                 f"{_num(s.get('kl'))} nats (the mean of Σ_t log π/πSFT over a response)."]
        if s.get("reference"):
            lines.append(f"Reference (πSFT, the KL anchor): artifact `{s['reference']}`.")
        return "\n".join(lines) + "\n"
    return ""


def _reward_section(m: ModelArtifact) -> str:
    norm = m.reward_normalization()
    out = ["\n**Input.** A prompt and a response, encoded as in training: the prompt with the tokenizer's special "
           "tokens (or its chat template), then the response followed by one EOS token; the score is read at that "
           "EOS (the last non-pad token). A text-classification pipeline on `prompt + response + eos_token` gives "
           "the same score up to how the tokenizer splits the prompt/response boundary."]
    if norm:
        raw = f"raw mean {_num(norm.get('raw_mean'))}, std {_num(norm.get('raw_std'))}"
        cal = f"{norm.get('responses')} responses ({norm.get('source')}, artifact `{norm.get('artifact')}`)"
        if norm["folded"]:
            how = "The head's output already is the normalized score S (the normalization is folded into it)."
        else:
            how = ("The head outputs the raw score; the normalized score is S = gain · (raw + bias), with bias and "
                   "gain recorded in config.json (`alignpipe_reward_normalization`; alignpipe's RewardScorer "
                   "applies it).")
        out.append(f"\n**Normalization.** S = gain · (raw + bias) with bias = {_num(norm.get('bias'))}, gain = "
                   f"{_num(norm.get('gain'))}, computed on {cal} so that πSFT's samples score mean 0, std 1 "
                   f"({raw}). {how}")
    return "\n".join(out) + "\n"


def _load(m: ModelArtifact) -> str:
    use = ('out = model.generate(**tok("Review of the lamp:", return_tensors="pt"), max_new_tokens=32)'
           if m.task == "text-generation" else
           'text = "Review of the lamp: It is great." + tok.eos_token\n'
           'score = model(**tok(text, return_tensors="pt")).logits[0, 0]')
    return ("## Use\n\n```python\n"
            f"from transformers import {m.auto_class}, AutoTokenizer\n\n"
            f'model = {m.auto_class}.from_pretrained("PATH")  # this directory\n'
            'tok = AutoTokenizer.from_pretrained("PATH")\n'
            f"{use}\n```\n\nThe tokenizer (pad ≠ EOS) and, where the model has them, the chat template and the "
            "generation config are in this directory.\n")


METRICS = {  # summary keys worth a line in a card, per role
    "base LM": ("parameters", "train_loss", "eval_loss", "steps", "train_tokens"),
    "πSFT": ("eval_loss", "eval_loss_init", "train_loss", "steps", "train_tokens", "examples"),
    "Rφ": ("eval_accuracy", "label_ceiling_accuracy", "train_accuracy", "train_loss", "steps", "pairs"),
    "πRLHF": ("score", "gold", "kl", "beta", "rollouts", "optimizer_steps", "wall_seconds"),
    "value model": ("value_loss", "explained_variance", "critic_init"),
}


def _metrics(m: ModelArtifact) -> str:
    s = m.summary
    rows = [(k, s[k]) for k in METRICS.get(m.role.symbol, ()) if s.get(k) is not None]
    if s.get("headline") and "\n" not in s["headline"]:
        rows.insert(0, ("headline", s["headline"]))
    if not rows:
        return ""
    body = "\n".join(f"| {k} | {_value(v)} |" for k, v in rows)
    series = f"`alignpipe metrics {m.producer.get('stage')}`"
    return (f"## Metrics\n\nFrom the producing stage's summary (the full series: {series}).\n\n"
            f"| metric | value |\n|---|---|\n{body}\n")


def _training(m: ModelArtifact) -> str:
    p, code = m.producer, m.manifest.get("code", {})
    rows = [("stage", f"`{p.get('stage')}` ({p.get('uses')} v{p.get('version')})"), ("run", p.get("run_id")),
            ("fingerprint", p.get("fingerprint")), ("seed", p.get("seed")),
            ("code", " ".join(f"{k} {v}" for k, v in code.items())), ("artifact id", m.id)]
    body = "\n".join(f"| {k} | {_value(v)} |" for k, v in rows if v is not None)
    return f"## Training\n\n| | |\n|---|---|\n{body}\n"


def _data(m: ModelArtifact) -> str:
    """The datasets upstream: what the model was (directly or indirectly) trained on."""
    rows = [f"| `{ref}` | `{d['id'][:12]}` | {_value(d['facts'])} |" for ref, d in m.datasets.items()]
    rows += [f"| external | `{i[:12]}` | {uri} |" for i, uri in sorted(m.external.items())]
    if not rows:
        return ""
    return "## Data\n\n| dataset | artifact | facts |\n|---|---|---|\n" + "\n".join(rows) + "\n"


def _lineage(m: ModelArtifact) -> str:
    body = "\n".join(f"| `{ref}` | `{i}` |" for ref, i in sorted(m.lineage.items()))
    return ("## Lineage\n\nEvery artifact upstream of this model in the alignpipe store (`alignpipe lineage "
            f"{m.id[:12]}`):\n\n| stage.output | artifact id |\n|---|---|\n{body}\n")


def _params(m: ModelArtifact) -> str:
    params = json.dumps(m.manifest.get("params", {}), indent=1, sort_keys=True)
    return f"## Parameters\n\nThe producing stage's resolved parameters:\n\n```json\n{params}\n```\n"


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return f"{v[:12]}" if isinstance(v, str) and len(v) == 64 else str(v)  # an artifact id: its short form


def _value(v: Any) -> str:
    if isinstance(v, float):
        return _num(v)
    if isinstance(v, dict):
        return ", ".join(f"{k} {_num(x)}" for k, x in v.items())
    return str(v).replace("|", "\\|")
