"""Gao et al.'s forms fitted by least squares: exact recovery, honest intervals, t quantiles on literals."""

import math
import random

import pytest

from alignpipe.report.fit import FORMS, fit, incomplete_beta, t_quantile


@pytest.mark.parametrize(("df", "q"), [(1, 12.7062047), (3, 3.1824463), (10, 2.2281389), (1000, 1.9623391)])
def test_t_quantile_matches_tables(df, q):
    assert t_quantile(0.975, df) == pytest.approx(q, rel=1e-6)
    assert t_quantile(0.025, df) == pytest.approx(-q, rel=1e-6)


def test_incomplete_beta_on_closed_forms():
    assert incomplete_beta(1, 1, 0.3) == pytest.approx(0.3)  # uniform
    assert incomplete_beta(2, 1, 0.5) == pytest.approx(0.25)  # x²
    assert incomplete_beta(0.5, 0.5, 0.5) == pytest.approx(0.5)  # symmetric


@pytest.mark.parametrize("form", ["bon", "rl"])
def test_exact_points_are_recovered_with_r2_one(form):
    ds = [0.5, 1.0, 1.5, 2.0, 3.0]
    alpha, beta = 0.8, 0.2
    rs = [FORMS[form](d, alpha, beta) for d in ds]
    f = fit(form, ds, rs)
    assert f.alpha == pytest.approx(alpha) and f.beta == pytest.approx(beta)
    assert f.r2 == pytest.approx(1.0) and f.rmse == pytest.approx(0.0, abs=1e-12) and f.n == 5
    assert f.alpha_ci[0] == pytest.approx(alpha) and f.alpha_ci[1] == pytest.approx(alpha)


def test_peaks_follow_the_forms():
    bon = fit("bon", [1, 2, 3], [1 * (1 - 0.25 * 1), 2 * (1 - 0.25 * 2), 3 * (1 - 0.25 * 3)])
    assert bon.peak == pytest.approx(1 / (2 * 0.25))  # d(α − βd) peaks at α / 2β
    rl = fit("rl", [1, 2, 3], [d * (1 - 0.5 * math.log(d)) for d in (1, 2, 3)])
    assert rl.peak == pytest.approx(math.exp(1 / 0.5 - 1))  # d(α − β log d) peaks at exp(α/β − 1)


def test_intervals_cover_the_truth_at_about_95_percent():
    rng = random.Random(0)
    ds = [0.3 * k for k in range(1, 9)]
    covered = 0
    for _ in range(400):
        rs = [d * (1.0 - 0.3 * d) + rng.gauss(0, 0.05) for d in ds]
        f = fit("bon", ds, rs)
        covered += f.alpha_ci[0] <= 1.0 <= f.alpha_ci[1]
    assert 0.92 <= covered / 400 <= 0.98


def test_points_at_zero_are_left_out_and_too_few_points_refused():
    f = fit("rl", [0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 1.5, 1.7])
    assert f.n == 3
    with pytest.raises(ValueError, match="at least 2 points with d > 0"):
        fit("bon", [0.0, 1.0], [0.0, 1.0])
