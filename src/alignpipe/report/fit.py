"""Gao et al. (2022)'s scaling forms for reward-model overoptimization, fitted by least squares (pure Python).

With d = √KL(π ‖ π_init) and R the gold (or proxy) score gain over the initial policy:
    best-of-n:  R_bon(d) = d (α − β d)        = α·d − β·d²
    RL:         R_RL(d)  = d (α − β log d)    = α·d − β·d·log d
Both are linear in (α, β), so ordinary least squares without intercept gives the estimates, their standard
errors and t-intervals exactly; no optimizer, no numpy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The Student-t quantile, by bisection on the CDF (p in (0, 1))."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile needs 0 < p < 1, got {p}")
    lo, hi = -1e4, 1e4
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True)
class Fit:
    """R(d) = α·f1(d) − β·f2(d) fitted to n points; intervals are 95% t-intervals (None with n ≤ 2)."""

    form: str  # "bon" or "rl"
    alpha: float
    beta: float
    alpha_ci: tuple[float, float] | None
    beta_ci: tuple[float, float] | None
    r2: float  # 1 − SS_res / SS_tot, SS_tot about the mean of R (no credit for passing through the origin)
    rmse: float
    n: int

    def predict(self, d: float) -> float:
        return FORMS[self.form](d, self.alpha, self.beta)

    @property
    def peak(self) -> float | None:
        """The d where the fitted gain is largest (None if it keeps rising)."""
        if self.beta <= 0:
            return None
        return self.alpha / (2 * self.beta) if self.form == "bon" else math.exp(self.alpha / self.beta - 1)


def _bon(d: float, alpha: float, beta: float) -> float:
    return d * (alpha - beta * d)


def _rl(d: float, alpha: float, beta: float) -> float:
    return d * (alpha - beta * math.log(d)) if d > 0 else 0.0


FORMS: dict[str, Callable[[float, float, float], float]] = {"bon": _bon, "rl": _rl}
FEATURES: dict[str, Callable[[float], tuple[float, float]]] = {
    "bon": lambda d: (d, d * d),
    "rl": lambda d: (d, d * math.log(d) if d > 0 else 0.0),
}


def fit(form: str, ds: Sequence[float], rs: Sequence[float]) -> Fit:
    """Least squares of R = α·f1(d) − β·f2(d) over points with d > 0 (d = 0 is fitted by every (α, β))."""
    pts = [(d, r) for d, r in zip(ds, rs, strict=True) if d > 0 and math.isfinite(r)]
    if len(pts) < 2:
        raise ValueError(f"fitting the {form} form needs at least 2 points with d > 0, got {len(pts)}")
    xs = [FEATURES[form](d) for d, _ in pts]
    ys = [r for _, r in pts]
    s11 = sum(a * a for a, _ in xs)
    s12 = sum(a * b for a, b in xs)
    s22 = sum(b * b for _, b in xs)
    sy1 = sum(a * y for (a, _), y in zip(xs, ys, strict=True))
    sy2 = sum(b * y for (_, b), y in zip(xs, ys, strict=True))
    det = s11 * s22 - s12 * s12
    if abs(det) < 1e-12 * max(s11 * s22, 1e-300):
        raise ValueError(f"the {form} fit is degenerate: the points' d values are too alike")
    alpha = (s22 * sy1 - s12 * sy2) / det
    beta = -(s11 * sy2 - s12 * sy1) / det  # the form subtracts β·f2
    resid = [y - (alpha * a - beta * b) for (a, b), y in zip(xs, ys, strict=True)]
    ss_res = sum(e * e for e in resid)
    mean = sum(ys) / len(ys)
    ss_tot = sum((y - mean) ** 2 for y in ys)
    n, dof = len(pts), len(pts) - 2
    alpha_ci = beta_ci = None
    if dof > 0:
        sigma2 = ss_res / dof
        q = t_quantile(0.975, dof)
        se_a, se_b = math.sqrt(sigma2 * s22 / det), math.sqrt(sigma2 * s11 / det)
        alpha_ci, beta_ci = (alpha - q * se_a, alpha + q * se_a), (beta - q * se_b, beta + q * se_b)
    r2 = 1 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    return Fit(form, alpha, beta, alpha_ci, beta_ci, r2, math.sqrt(ss_res / n), n)
