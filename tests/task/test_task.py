import math
import statistics

import pytest

from alignpipe.task import (
    SPLITS,
    SimulatedHuman,
    gold_score,
    make_corpus,
    make_demonstrations,
    make_prompts,
    prompt_pool,
)


def test_generators_are_deterministic_per_seed():
    assert make_corpus(1, 20) == make_corpus(1, 20) != make_corpus(2, 20)
    assert make_demonstrations(1, 20) == make_demonstrations(1, 20) != make_demonstrations(2, 20)
    assert make_prompts(1, 20, "rl") == make_prompts(1, 20, "rl") != make_prompts(2, 20, "rl")


def test_prompt_splits_are_disjoint_and_eval_is_held_out():
    pools = {s: set(prompt_pool(s)) for s in SPLITS}
    assert all(len(p) >= 100 for p in pools.values())
    for a in SPLITS:
        for b in SPLITS:
            assert a == b or not pools[a] & pools[b]
    assert set(make_prompts(0, 500, "eval")) <= pools["eval"]
    assert {d["prompt"] for d in make_demonstrations(0, 300)} <= pools["sft"]
    corpus = make_corpus(0, 2000)
    assert not any(doc.startswith(p + " ") for doc in corpus for p in pools["eval"])
    with pytest.raises(ValueError, match="unknown prompt split 'test'"):
        make_prompts(0, 1, "test")


def test_prompts_do_not_repeat_before_the_pool_is_exhausted():
    pool = prompt_pool("rl")
    prompts = make_prompts(0, len(pool) + 5, "rl")
    assert len(set(prompts[: len(pool)])) == len(pool)


def test_demonstrations_have_mixed_sentiment_with_room_to_improve():
    demos = make_demonstrations(0, 1000)
    assert all(d["completion"].startswith(" ") and d["prompt"].endswith(":") for d in demos)
    scores = gold_score([d["completion"] for d in demos])
    assert -0.15 < statistics.mean(scores) < 0.35
    assert sum(s < -0.3 for s in scores) > 200 and sum(s > 0.3 for s in scores) > 200
    assert max(scores) > 0.9


def test_gold_score_orders_sentiment():
    pos, neg, neutral = gold_score(["I love it. It works well.", "It broke. Do not buy it.", "It came in a box."])
    assert pos > 0.5 and neg < -0.3 and neutral == 0.0


def test_simulated_human_follows_bradley_terry():
    good, bad = "I love it. It is great.", "It is bad."
    ga, gb = gold_score([good, bad])
    human = SimulatedHuman(temperature=0.5, seed=0)
    labels = human.label([good] * 4000, [bad] * 4000)
    p = 1 / (1 + math.exp(-(ga - gb) / 0.5))
    assert labels[0].p_a == pytest.approx(p) and (labels[0].gold_a, labels[0].gold_b) == (ga, gb)
    frac = sum(lab.a_preferred for lab in labels) / len(labels)
    assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / len(labels))
    again = SimulatedHuman(temperature=0.5, seed=0).label([good] * 50, [bad] * 50)
    assert [x.a_preferred for x in again] == [x.a_preferred for x in labels[:50]]


def test_simulated_human_ceiling_accuracy():
    human = SimulatedHuman(temperature=0.25)
    assert human.ceiling_accuracy([0.0, 0.5], [0.0, 0.0]) == pytest.approx((0.5 + 1 / (1 + math.exp(-2))) / 2)
    assert human.ceiling_accuracy([0.0], [0.5]) == pytest.approx(human.ceiling_accuracy([0.5], [0.0]))
    assert SimulatedHuman(temperature=1e-3).ceiling_accuracy([0.9, -0.2], [0.1, 0.3]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        SimulatedHuman(temperature=0)
