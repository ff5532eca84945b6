"""The certification math of median (percentile) smoothing, apart from any sampling.

Setting (Chiang et al. 2020, "Detection as regression: certified object detection
by median smoothing"): f maps an image to a score, G ~ N(0, sigma^2 I), and

    h_p(x) = inf{y : P[f(x + G) <= y] >= p}

is the p-th percentile of the scores of the noisy copies of x. For every delta
with ||delta||_2 <= eps,

    h_{p_lower}(x) <= h_p(x + delta) <= h_{p_upper}(x),
    p_lower = Phi(Phi^-1(p) - eps / sigma),  p_upper = Phi(Phi^-1(p) + eps / sigma).

The two outer percentiles are unknown; from n samples y_(1) <= ... <= y_(n) of
f(x + G) they are bounded by order statistics whose ranks come from exact binomial
tails (:func:`bound_ranks`), or for all levels at once by a
Dvoretzky-Kiefer-Wolfowitz band (:func:`dkw_epsilon`, :func:`dkw_ranks`).

All ranks here are 1-based: rank k names y_(k), the k-th smallest sample, which is
``sorted_samples[..., k - 1]`` in Python.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from scipy.stats import binom, norm

from ._checks import check_int, check_nonnegative, check_open_unit, check_positive

__all__ = [
    "percentile_levels",
    "bound_ranks",
    "dkw_epsilon",
    "dkw_ranks",
    "dkw_radius",
    "inward_interval",
]


def percentile_levels(eps: float, sigma: float, p: float = 0.5) -> tuple[float, float]:
    """Percentile levels that bound h_p under any l2 perturbation of norm <= eps.

    Returns ``(p_lower, p_upper)`` with ``p_lower = Phi(Phi^-1(p) - eps/sigma)`` and
    ``p_upper = Phi(Phi^-1(p) + eps/sigma)``: for all ||delta||_2 <= eps,
    ``h_{p_lower}(x) <= h_p(x + delta) <= h_{p_upper}(x)``.
    """
    check_nonnegative("eps", eps)
    check_positive("sigma", sigma)
    check_open_unit("p", p)
    z = float(norm.ppf(p))
    return float(norm.cdf(z - eps / sigma)), float(norm.cdf(z + eps / sigma))


def bound_ranks(
    n: int, sigma: float, eps: float, alpha: float, p: float = 0.5
) -> tuple[int | None, int | None]:
    """1-based ranks of the order statistics that certify h_p within radius eps.

    ``k_lower`` is the largest k with ``P[Binomial(n, p_lower) >= k] >= 1 - alpha/2``
    and ``k_upper`` the smallest k with ``P[Binomial(n, p_upper) <= k - 1] >= 1 - alpha/2``;
    a side is ``None`` when no rank in 1..n qualifies (n too small for alpha): that
    side is then not certified and must be reported as -inf / +inf.

    Guarantee: if y_(1) <= ... <= y_(n) are sorted i.i.d. samples of f(x + G), then
    with probability >= 1 - alpha over the sampling, for every delta with
    ||delta||_2 <= eps,

        y_(k_lower) <= h_p(x + delta) <= y_(k_upper).

    Proof sketch: y_(k) <= h_{p_lower}(x) as soon as at least k samples fall at or
    below that percentile, and their number is Binomial(n, q) with q >= p_lower;
    the upper side is symmetric with "fewer than k samples strictly below".
    """
    check_int("n (the number of noise samples)", n)
    check_open_unit("alpha", alpha)
    p_lower, p_upper = percentile_levels(eps, sigma, p)
    ks = np.arange(1, int(n) + 1)
    confidence = 1.0 - alpha / 2.0
    # These are 1-based ranks. Published median-smoothing code indexes the sorted
    # array 0-based with the same k (sorted[k_lower]), which picks y_(k_lower + 1):
    # one sample too high, i.e. optimistic, on the lower side. Callers here must
    # read sorted[..., k - 1].
    lower_ok = binom.sf(ks - 1, n, p_lower) >= confidence  # P[B >= k], decreasing in k
    upper_ok = binom.cdf(ks - 1, n, p_upper) >= confidence  # P[B <= k-1], increasing in k
    k_lower = int(ks[lower_ok][-1]) if lower_ok.any() else None
    k_upper = int(ks[upper_ok][0]) if upper_ok.any() else None
    return k_lower, k_upper


def dkw_epsilon(n: int, alpha: float) -> float:
    """Half-width of the Dvoretzky-Kiefer-Wolfowitz band (Massart's constant).

    With probability >= 1 - alpha, ``sup_y |F_n(y) - F(y)| <= sqrt(ln(2/alpha) / (2n))``
    where F_n is the empirical CDF of n i.i.d. samples: one event for every level
    (and so every eps) at once.
    """
    check_int("n (the number of noise samples)", n)
    check_open_unit("alpha", alpha)
    return math.sqrt(math.log(2.0 / alpha) / (2.0 * n))


def dkw_ranks(n: int, level: float, band: float) -> tuple[int | None, int | None]:
    """1-based ranks bracketing the ``level`` percentile inside a DKW band.

    On the event ``sup |F_n - F| <= band``: ``y_(k_lo) <= h_level <= y_(k_hi)`` with
    ``k_lo = ceil(n (level - band))`` and ``k_hi = ceil(n (level + band))``; a side
    is ``None`` when its rank leaves 1..n (that side is unbounded).
    """
    check_int("n (the number of noise samples)", n)
    # The lower rank is rounded down by a hair so that float error in n*(level-band)
    # can only make it smaller (more conservative), never larger.
    k_lo = math.ceil(n * (level - band) - 1e-9)
    k_hi = math.ceil(n * (level + band))
    return (k_lo if k_lo >= 1 else None), (k_hi if k_hi <= n else None)


def dkw_radius(n: int, k_min: int, k_max: int, sigma: float, alpha: float, p: float = 0.5) -> float:
    """Largest radius at which the DKW bounds stay inside the ranks ``[k_min, k_max]``.

    For eps >= 0 the DKW bounds of h_p(x + delta), ||delta||_2 <= eps, are
    ``y_(k_lo(eps))`` and ``y_(k_hi(eps))`` (:func:`dkw_ranks` at levels p_lower(eps),
    p_upper(eps)). Returns the supremum R of the eps with ``k_lo(eps) >= k_min`` and
    ``k_hi(eps) <= k_max``, or 0.0 when even eps = 0 fails. Since the DKW event covers
    every level at once, with probability >= 1 - alpha the bounds hold for every
    eps < R simultaneously.
    """
    check_int("n (the number of noise samples)", n)
    check_positive("sigma", sigma)
    check_open_unit("alpha", alpha)
    check_open_unit("p", p)
    band = dkw_epsilon(n, alpha)
    z = float(norm.ppf(p))
    t_lower = (k_min - 1) / n + band  # need p_lower(eps) > t_lower
    t_upper = k_max / n - band  # need p_upper(eps) <= t_upper
    if t_lower >= 1.0 or t_upper <= 0.0:
        return 0.0
    radius = sigma * min(z - float(norm.ppf(t_lower)), float(norm.ppf(t_upper)) - z)
    return max(radius, 0.0)


def inward_interval(center: float, delta: float) -> tuple[float, float]:
    """Float64 ends ``(lo, hi)`` of the real interval [center - delta, center + delta], rounded inward.

    ``lo`` is the smallest float64 >= center - delta and ``hi`` the largest float64
    <= center + delta, both computed exactly (rational arithmetic), so that for every
    float64 s: ``lo <= s <= hi`` if and only if ``|s - center| <= delta`` exactly.
    Computing ``center - delta`` in floating point instead can round outward and let
    a sample farther than delta count as inside (with bfloat16 scores, 89.5 - 0.3
    rounds to 89.0).
    """
    if not (math.isfinite(center) and math.isfinite(delta)) or delta < 0:
        raise ValueError(f"center must be finite and delta finite and >= 0, got center={center!r}, delta={delta!r}.")
    exact_lo = Fraction(center) - Fraction(delta)
    exact_hi = Fraction(center) + Fraction(delta)
    lo, hi = float(exact_lo), float(exact_hi)  # correctly rounded to nearest
    if Fraction(lo) < exact_lo:
        lo = math.nextafter(lo, math.inf)
    if Fraction(hi) > exact_hi:
        hi = math.nextafter(hi, -math.inf)
    return lo, hi
