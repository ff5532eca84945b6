"""certiqa.bounds against independently computed binomial tails and closed forms."""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from certiqa import bounds

mpmath.mp.dps = 40


def _phi(z: float) -> mpmath.mpf:
    return mpmath.ncdf(z)


def _exact_ranks(n: int, sigma: float, eps: float, alpha: float) -> tuple[int | None, int | None, float]:
    """Brute force with 40-digit binomial sums; also returns the closest tail-to-threshold gap."""
    p_lo, p_hi = _phi(-eps / sigma), _phi(eps / sigma)
    conf = 1 - mpmath.mpf(alpha) / 2

    def pmf(i: int, p: mpmath.mpf) -> mpmath.mpf:
        return mpmath.binomial(n, i) * p**i * (1 - p) ** (n - i)

    lower_pmf = [pmf(i, p_lo) for i in range(n + 1)]
    upper_pmf = [pmf(i, p_hi) for i in range(n + 1)]
    k_lower = k_upper = None
    gap = math.inf
    for k in range(1, n + 1):
        at_least_k = mpmath.fsum(lower_pmf[k:])  # P[B >= k]
        gap = min(gap, abs(float(at_least_k - conf)))
        if at_least_k >= conf:
            k_lower = k
    for k in range(n, 0, -1):
        at_most = mpmath.fsum(upper_pmf[:k])  # P[B <= k - 1]
        gap = min(gap, abs(float(at_most - conf)))
        if at_most >= conf:
            k_upper = k
    return k_lower, k_upper, gap


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 250),
    sigma=st.floats(0.01, 1.0),
    eps=st.floats(0.0, 0.5),
    alpha=st.sampled_from([0.5, 0.1, 0.01, 0.001, 1e-6]),
)
def test_bound_ranks_match_exact_binomial_tails(n, sigma, eps, alpha):
    k_lower, k_upper, gap = _exact_ranks(n, sigma, eps, alpha)
    assume(gap > 1e-9)  # a tail within float error of the threshold is undecidable in doubles
    assert bounds.bound_ranks(n, sigma, eps, alpha) == (k_lower, k_upper)


@pytest.mark.parametrize(
    "n, sigma, eps, alpha",
    [(1, 0.12, 0.0, 0.001), (5, 0.12, 0.05, 0.001), (10, 0.25, 0.1, 0.001), (3, 0.12, 0.0, 0.1)],
)
def test_bound_ranks_none_when_n_too_small(n, sigma, eps, alpha):
    k_lower, k_upper, _ = _exact_ranks(n, sigma, eps, alpha)
    assert k_lower is None and k_upper is None
    assert bounds.bound_ranks(n, sigma, eps, alpha) == (None, None)


def test_bound_ranks_are_symmetric_and_widen_with_eps():
    n, sigma, alpha = 1000, 0.12, 0.001
    previous = None
    for eps in (0.0, 0.02, 0.05, 0.1, 0.2):
        k_lower, k_upper = bounds.bound_ranks(n, sigma, eps, alpha)
        assert k_upper == n + 1 - k_lower  # p_upper = 1 - p_lower
        assert k_lower <= math.ceil(n / 2) <= k_upper
        if previous is not None:
            assert k_lower <= previous[0] and k_upper >= previous[1]
        previous = (k_lower, k_upper)


def test_percentile_levels_closed_form():
    assert bounds.percentile_levels(0.0, 0.3) == pytest.approx((0.5, 0.5))
    lo, hi = bounds.percentile_levels(0.12, 0.12)
    assert lo == pytest.approx(0.15865525393145707, abs=1e-12)  # Phi(-1)
    assert hi == pytest.approx(0.8413447460685429, abs=1e-12)
    lo, hi = bounds.percentile_levels(0.1, 0.2, p=0.9)
    assert lo == pytest.approx(float(_phi(1.2815515655446004 - 0.5)), abs=1e-12)
    assert hi == pytest.approx(float(_phi(1.2815515655446004 + 0.5)), abs=1e-12)


def test_dkw_epsilon_closed_form():
    assert bounds.dkw_epsilon(1000, 0.001) == pytest.approx(math.sqrt(math.log(2000) / 2000))


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(10, 5000),
    k_min_frac=st.floats(0.0, 0.5),
    k_max_frac=st.floats(0.5, 1.0),
    sigma=st.floats(0.01, 1.0),
    alpha=st.sampled_from([0.1, 0.01, 0.001]),
)
def test_dkw_radius_is_the_supremum(n, k_min_frac, k_max_frac, sigma, alpha):
    """Below R the DKW ranks stay inside [k_min, k_max]; just above R they leave it."""
    k_min = max(1, int(k_min_frac * n))
    k_max = max(k_min, int(k_max_frac * n))
    radius = bounds.dkw_radius(n, k_min, k_max, sigma, alpha)
    band = bounds.dkw_epsilon(n, alpha)

    def inside(eps: float) -> bool:
        p_lo, p_hi = bounds.percentile_levels(eps, sigma)
        k_lo, _ = bounds.dkw_ranks(n, p_lo, band)
        _, k_hi = bounds.dkw_ranks(n, p_hi, band)
        return k_lo is not None and k_hi is not None and k_lo >= k_min and k_hi <= k_max

    assert radius >= 0.0  # never NaN (ranks whose DKW levels leave [0, 1])
    if radius > 0:
        assert inside(radius * (1 - 1e-6))
        assert not inside(radius * (1 + 1e-3) + 1e-9)
    else:
        assert not inside(1e-6 * sigma)


def _expected_dkw_radius(n: int, k_min: int, k_max: int, sigma: float, alpha: float) -> float:
    """dkw_radius at p = 0.5 computed apart: Massart's band, the normal quantile of the standard
    library, and 0 wherever a DKW level leaves (0, 1) (no rank can then be certified)."""
    from statistics import NormalDist

    band = math.sqrt(math.log(2 / alpha) / (2 * n))
    t_lower, t_upper = (k_min - 1) / n + band, k_max / n - band
    if not (0 < t_lower < 1 and 0 < t_upper < 1):
        return 0.0
    return max(0.0, sigma * min(-NormalDist().inv_cdf(t_lower), NormalDist().inv_cdf(t_upper)))


@pytest.mark.parametrize("n, k_min, k_max", [
    (1, 1, 1), (2, 1, 2), (3, 1, 3),  # band > 1 at alpha 0.001 (n <= 3): the levels leave [0, 1]
    (4, 1, 4), (15, 1, 15),  # band < 1 but > 1/2: no radius either
    (16, 1, 16),  # the first n whose full rank range certifies a radius at alpha 0.001
    (10, 5, 5), (100, 100, 100), (100, 1, 1),  # median ranks of a tiny n; ranks at the ends
])
def test_dkw_radius_pinned_for_tiny_n_and_extreme_ranks(n, k_min, k_max):
    expected = _expected_dkw_radius(n, k_min, k_max, 0.25, 0.001)
    assert bounds.dkw_radius(n, k_min, k_max, 0.25, 0.001) == pytest.approx(expected, rel=1e-12, abs=0.0)
    assert (expected > 0) == (n == 16)


def test_dkw_radius_band_boundary_closed_form():
    """The band sqrt(ln(2/alpha)/(2n)) crosses 1 between n = 3 and 4 and 1/2 between n = 15 and 16
    at alpha 0.001 (ln 2000 / 2 = 3.80; / 0.25 = 15.2); at n = 16 the radius is sigma * (-Phi^-1(band))."""
    assert bounds.dkw_epsilon(3, 0.001) > 1 > bounds.dkw_epsilon(4, 0.001)
    assert bounds.dkw_epsilon(15, 0.001) > 0.5 > bounds.dkw_epsilon(16, 0.001)
    band = math.sqrt(math.log(2000) / 32)
    phi_inv = float(mpmath.sqrt(2) * mpmath.erfinv(2 * mpmath.mpf(band) - 1))  # an independent quantile
    assert bounds.dkw_radius(16, 1, 16, 0.25, 0.001) == pytest.approx(-0.25 * phi_inv, rel=1e-9)


def test_certified_radius_samples_of_tiny_n_is_zero_not_nan():
    import torch

    from certiqa.smoothing import certified_radius_samples

    for samples, delta in (([[3.0]], 1.0), ([[1.0, 2.0]], 5.0), ([[1.0, 2.0, 3.0]], 5.0),
                           ([list(map(float, range(10)))], 0.0), ([list(map(float, range(15)))], 100.0)):
        radius = certified_radius_samples(torch.tensor(samples), delta, 0.25, 0.001)
        assert radius.tolist() == [0.0], (samples, radius)
    wide = certified_radius_samples(torch.arange(16.0)[None], 100.0, 0.25, 0.001)
    assert wide.tolist() == pytest.approx([_expected_dkw_radius(16, 1, 16, 0.25, 0.001)], rel=1e-12)


def test_dkw_ranks_closed_form():
    # levels and bands exactly representable in binary, so no rounding question arises
    assert bounds.dkw_ranks(200, 0.25, 0.125) == (25, 75)
    assert bounds.dkw_ranks(100, 0.0625, 0.125) == (None, 19)
    assert bounds.dkw_ranks(100, 0.9375, 0.125) == (82, None)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: bounds.percentile_levels(-0.1, 0.1), "eps must be"),
        (lambda: bounds.percentile_levels(float("nan"), 0.1), "eps must be"),
        (lambda: bounds.percentile_levels(0.1, 0.0), "sigma must be"),
        (lambda: bounds.percentile_levels(0.1, 0.1, p=1.0), "p must lie"),
        (lambda: bounds.bound_ranks(0, 0.1, 0.1, 0.01), "n \\(the number of noise samples\\)"),
        (lambda: bounds.bound_ranks(10.5, 0.1, 0.1, 0.01), "n \\(the number"),
        (lambda: bounds.bound_ranks(True, 0.1, 0.1, 0.01), "n \\(the number"),
        (lambda: bounds.bound_ranks(10, 0.1, 0.1, 0.0), "alpha must lie"),
        (lambda: bounds.bound_ranks(10, 0.1, 0.1, 1.0), "alpha must lie"),
        (lambda: bounds.dkw_epsilon(10, 2.0), "alpha must lie"),
        (lambda: bounds.dkw_radius(10, 1, 10, -1.0, 0.1), "sigma must be"),
    ],
)
def test_validation_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_inward_interval_pinned_cases():
    # bfloat16's trap, in float64: the ends are the floats nearest the exact ends, inward
    lo, hi = bounds.inward_interval(89.5, 0.3)
    assert Fraction(lo) >= Fraction(89.5) - Fraction(0.3) > Fraction(math.nextafter(lo, -math.inf))
    assert Fraction(hi) <= Fraction(89.5) + Fraction(0.3) < Fraction(math.nextafter(hi, math.inf))
    # 1.0 + (the float below 0.25) rounds to 1.25 in float64; the exact upper end is below it
    assert bounds.inward_interval(1.0, math.nextafter(0.25, 0.0))[1] == math.nextafter(1.25, 0.0)
    assert bounds.inward_interval(1.0, 0.25) == (0.75, 1.25)
    assert bounds.inward_interval(3.0, 0.0) == (3.0, 3.0)


@settings(max_examples=200, deadline=None)
@given(center=st.floats(-1e6, 1e6), delta=st.floats(0.0, 1e3))
def test_inward_interval_is_exact(center, delta):
    """lo is the smallest float >= center - delta, hi the largest float <= center + delta."""
    lo, hi = bounds.inward_interval(center, delta)
    exact_lo, exact_hi = Fraction(center) - Fraction(delta), Fraction(center) + Fraction(delta)
    assert Fraction(lo) >= exact_lo and Fraction(math.nextafter(lo, -math.inf)) < exact_lo
    assert Fraction(hi) <= exact_hi and Fraction(math.nextafter(hi, math.inf)) > exact_hi


@pytest.mark.parametrize("center, delta", [(math.nan, 1.0), (math.inf, 1.0), (0.0, -1.0), (0.0, math.inf)])
def test_inward_interval_errors(center, delta):
    with pytest.raises(ValueError, match="center must be finite and delta finite and >= 0"):
        bounds.inward_interval(center, delta)
