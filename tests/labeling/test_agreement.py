"""Aggregation and agreement on literal values (Fleiss' and Cohen's examples as published)."""

import pytest

from alignpipe.labeling import agreement
from alignpipe.labeling.agreement import aggregate, cohen_kappa, fleiss_kappa, majority_agreement, p_a


@pytest.mark.parametrize("votes, expect", [
    (["a", "a", "b"], "a"), (["b"], "b"), (["tie", "tie", "a"], "tie"),
    (["a", "b"], "split"), (["a", "b", "tie"], "split"), (["a", "a", "b", "b"], "split"), ([], None),
], ids=["2-1", "single", "tie-majority", "1-1", "three-ways", "2-2", "none"])
def test_strict_majority_decides_and_anything_else_is_split(votes, expect):
    assert aggregate(votes) == expect


def test_p_a_counts_ties_half():
    assert p_a(["a", "b", "tie"]) == 0.5
    assert p_a(["a", "a", "tie"]) == pytest.approx(2.5 / 3)
    assert p_a([]) is None


def test_fleiss_kappa_matches_fleiss_1971_worked_example():
    # the 10 subjects x 5 categories, 14 raters each, example (P = 0.378, Pe = 0.213, kappa = 0.210)
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert fleiss_kappa(table) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_kappa_with_varying_votes_per_item():
    # P_i = 1, 0, 1 (mean 2/3); category shares 3/7, 4/7 -> Pe = 25/49; kappa = (2/3 - 25/49) / (24/49) = 23/72
    assert fleiss_kappa([[2, 0, 0], [1, 1, 0], [0, 3, 0], [0, 1, 0]]) == pytest.approx(23 / 72)


def test_fleiss_kappa_undefined_without_overlap_or_with_one_label():
    assert fleiss_kappa([[1, 0, 0], [0, 1, 0]]) is None
    assert fleiss_kappa([[2, 0, 0], [3, 0, 0]]) is None


def test_cohen_kappa_matches_the_textbook_example():
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> po = 0.7, pe = 0.5, kappa = 0.4
    first = ["y"] * 25 + ["n"] * 25
    second = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert cohen_kappa(first, second) == pytest.approx(0.4)
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None
    with pytest.raises(ValueError, match="3 labels vs 2"):
        cohen_kappa(["a", "b", "a"], ["a", "b"])


def test_agreement_with_the_majority_of_the_others():
    votes = {"p1": {"x": "a", "y": "a", "z": "b"},  # x and y see a split among the others; z sees "a"
             "p2": {"x": "a", "y": "a"}, "p3": {"x": "b", "z": "b"}}
    assert majority_agreement(votes) == {"x": {"agree": 2, "of": 2, "rate": 1.0},
                                         "y": {"agree": 1, "of": 1, "rate": 1.0},
                                         "z": {"agree": 1, "of": 2, "rate": 0.5}}
    cohen = agreement.pairwise_cohen(votes)
    assert cohen["x|y"] == {"kappa": None, "items": 2} and cohen["x|z"]["items"] == 2 and "y|z" in cohen


def test_summarize_drops_skips_and_counts_outcomes():
    judgments = [{"pair": "p1", "annotator": "x", "choice": "a"}, {"pair": "p1", "annotator": "y", "choice": "b"},
                 {"pair": "p2", "annotator": "x", "choice": "a"}, {"pair": "p2", "annotator": "y", "choice": "a"},
                 {"pair": "p3", "annotator": "x", "choice": "skip"}, {"pair": "p3", "annotator": "y", "choice": "tie"}]
    s = agreement.summarize(judgments)
    assert s["pairs_with_votes"] == 3 and s["pairs_with_overlap"] == 2
    assert s["outcomes"] == {"a": 1, "b": 0, "tie": 1, "split": 1}
    # pairs p1 (a, b) and p2 (a, a): P = 0, 1; shares a 3/4, b 1/4 -> Pe = 10/16; kappa = (0.5 - 0.625) / 0.375
    assert s["fleiss_kappa"] == pytest.approx(-1 / 3)
    assert s["agreement_with_majority"]["x"] == {"agree": 1, "of": 2, "rate": 0.5}
