"""Templated product reviews: the embedded default task's text, generated offline from a seed.

A review has a latent star rating r ∈ {1..5} (skewed low); each sentence is positive with probability
(r − 1)/4 and negative otherwise, with neutral sentences and "X but Y" contrasts mixed in. Demonstrations
therefore have MIXED sentiment (mean gold score about 0.1, std 0.6) while all-positive reviews score about
0.85-0.97: the SFT policy sits well below the attainable maximum and PPO has room to move toward positive
sentiment.

Prompts are "<header> <item>:" combinations. Each combination belongs to exactly one split (sft, pref, rl,
eval) by a fixed hash, so held-out eval prompts never appear in training prompts or in the corpus.
"""

from __future__ import annotations

import hashlib
import random

SPLITS = ("sft", "pref", "rl", "eval")
_SPLIT_WEIGHTS = (0.3, 0.25, 0.3, 0.15)  # fractions of the prompt combinations in each split
_RATING_WEIGHTS = (0.3, 0.25, 0.2, 0.15, 0.1)  # 1..5 stars: skewed low so demonstrations average near 0

PRODUCTS = (
    "blender", "toaster", "kettle", "lamp", "chair", "backpack", "headphones", "mug", "pan", "fan",
    "heater", "clock", "speaker", "keyboard", "mouse", "camera", "phone case", "water bottle", "pillow",
    "blanket", "vacuum", "drill", "jacket", "tent",
)
MODIFIERS = ("new", "small", "large", "red", "blue", "black", "white", "cheap", "cordless")
HEADERS = ("Review of the", "My review of the", "Thoughts on the", "Customer review of the")
ASPECTS = ("lid", "handle", "cord", "button", "color", "size", "sound", "price", "box", "battery", "strap", "motor")
PEOPLE = ("my mom", "my dad", "my son", "my daughter", "my wife", "my husband", "a friend")
DAYS = ("Monday", "Tuesday", "Friday", "Sunday")

POSITIVE = (
    "The {p} is great.", "I love this {p}.", "It works well.", "It is easy to use.", "The {a} is excellent.",
    "It looks nice.", "It is worth the price.", "I am happy with it.", "I would buy it again.",
    "Highly recommend.", "The {a} is perfect.", "It is very good.", "My family loves it.",
    "The {p} is the best.", "It is strong and well made.",
)
NEGATIVE = (
    "The {p} is bad.", "It broke after a week.", "The {a} is cheap.", "It is hard to clean.",
    "I hate the {a}.", "It is too loud.", "It was a waste of money.", "I am disappointed.",
    "The {p} stopped working.", "Do not buy it.", "The {a} is weak.", "It is the worst {p}.",
    "The {a} fell off.", "It is poor quality.", "I want a refund.",
)
NEUTRAL = (
    "It arrived on {d}.", "I got it for {w}.", "I use it every day.", "It came in a box.",
    "The {a} is small.", "I bought it last month.", "It is {m}.", "I use it at home.",
)
POS_CLAUSES = ("the {a} is nice", "it works well", "it looks good", "the price is great", "it is easy to use")
NEG_CLAUSES = ("the {a} is weak", "it is too loud", "it broke quickly", "the {a} is cheap", "it is hard to clean")


def _split_of(header: str, item: str) -> str:
    """Fixed split of one prompt combination (a hash, independent of any seed)."""
    h = int.from_bytes(hashlib.sha256(f"{header}|{item}".encode()).digest()[:8], "big") / 2**64
    acc = 0.0
    for name, w in zip(SPLITS, _SPLIT_WEIGHTS, strict=True):
        acc += w
        if h < acc:
            return name
    return SPLITS[-1]


def _all_prompts() -> dict[str, list[tuple[str, str]]]:
    """split -> sorted list of (prompt text, product)."""
    out: dict[str, list[tuple[str, str]]] = {s: [] for s in SPLITS}
    for header in HEADERS:
        for p in PRODUCTS:
            for item in (p, *(f"{m} {p}" for m in MODIFIERS)):
                out[_split_of(header, item)].append((f"{header} {item}:", p))
    return out


_PROMPTS = _all_prompts()


def prompt_pool(split: str) -> list[str]:
    """Every prompt of one split (sft, pref, rl, eval), in a fixed order."""
    if split not in SPLITS:
        raise ValueError(f"unknown prompt split {split!r}; expected one of {', '.join(SPLITS)}")
    return [t for t, _ in _PROMPTS[split]]


def _pick_prompts(rng: random.Random, split: str, n: int) -> list[tuple[str, str]]:
    """n prompts of a split: shuffled passes over the pool, so no repeats until the pool is exhausted."""
    pool = _PROMPTS[split]
    out: list[tuple[str, str]] = []
    while len(out) < n:
        order = list(pool)
        rng.shuffle(order)
        out.extend(order[: n - len(out)])
    return out


def _fill(rng: random.Random, template: str, product: str) -> str:
    return template.format(
        p=product, a=rng.choice(ASPECTS), d=rng.choice(DAYS), w=rng.choice(PEOPLE), m=rng.choice(MODIFIERS[3:8])
    )


def _sentence(rng: random.Random, product: str, p_pos: float) -> str:
    u = rng.random()
    if u < 0.2:
        return _fill(rng, rng.choice(NEUTRAL), product)
    positive = rng.random() < p_pos
    if u < 0.35:  # a contrast: the clause after "but" carries the sentence's polarity
        first, second = (NEG_CLAUSES, POS_CLAUSES) if positive else (POS_CLAUSES, NEG_CLAUSES)
        text = f"{_fill(rng, rng.choice(first), product)} but {_fill(rng, rng.choice(second), product)}."
        return text[0].upper() + text[1:]
    return _fill(rng, rng.choice(POSITIVE if positive else NEGATIVE), product)


def review(rng: random.Random, product: str) -> str:
    """One review body (2-4 sentences) with a random star rating; no leading space."""
    p_pos = (rng.choices(range(5), weights=_RATING_WEIGHTS)[0]) / 4
    return " ".join(_sentence(rng, product, p_pos) for _ in range(rng.randint(2, 4)))


def make_corpus(seed: int, n: int) -> list[str]:
    """n raw documents for pretraining: reviews, half of them under a prompt header (never an eval prompt)."""
    rng = random.Random(f"corpus-{seed}")
    train_prompts = [pp for s in SPLITS if s != "eval" for pp in _PROMPTS[s]]
    docs = []
    for _ in range(n):
        prompt, product = rng.choice(train_prompts)
        body = review(rng, product)
        docs.append(f"{prompt} {body}" if rng.random() < 0.5 else body)
    return docs


def make_demonstrations(seed: int, n: int) -> list[dict[str, str]]:
    """n {"prompt", "completion"} records on sft-split prompts; completions start with a space."""
    rng = random.Random(f"demos-{seed}")
    return [{"prompt": prompt, "completion": " " + review(rng, product)} for prompt, product in
            _pick_prompts(rng, "sft", n)]


def make_prompts(seed: int, n: int, split: str) -> list[str]:
    """n prompts of one split: "pref" (preference pairs), "rl" (PPO), "eval" (held out) or "sft"."""
    if split not in SPLITS:
        raise ValueError(f"unknown prompt split {split!r}; expected one of {', '.join(SPLITS)}")
    rng = random.Random(f"prompts-{split}-{seed}")
    return [prompt for prompt, _ in _pick_prompts(rng, split, n)]
