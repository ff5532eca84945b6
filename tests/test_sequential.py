"""Sequential certification: the look schedule, its ranks, coverage under optional stopping,
the batched sampling of SmoothedIQA.certify_sequential, the CLI options, every validation error.

Coverage tests are one-sided binomial tests: with T trials and a claimed failure probability
of at most alpha, the test fails when the failure count exceeds binom.ppf(1 - LEVEL, T, alpha),
which a correct procedure does with probability <= LEVEL = 0.001.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import stats
from torch import nn

from certiqa import SmoothedIQA, bounds
from certiqa.cli import main

from conftest import REPO, Linear

mpmath.mp.dps = 40
LEVEL = 1e-3  # false-alarm probability of every binomial check below


# The scheme most tests here were written for: looks doubling from n0, alpha spent equally, and the
# "not certifiable" test whose every stop is proven (the defaults are bounds.DEFAULT_SCHEME).
PROOF_DOUBLING = {"spending": "equal", "futility": "proof", "growth": 2.0}


def tolerance(trials: int, alpha: float) -> int:
    """Largest failure count a procedure with failure probability <= alpha passes (one-sided, LEVEL)."""
    return int(stats.binom.ppf(1 - LEVEL, trials, alpha))


# --- the schedule and its ranks -----------------------------------------------------------------


def test_look_sizes_pinned():
    assert bounds.look_sizes(64, 1000, 2) == (64, 128, 256, 512, 1000)
    assert bounds.look_sizes(16, 128, 2) == (16, 32, 64, 128)
    assert bounds.look_sizes(3, 7, 2) == (3, 6, 7)
    assert bounds.look_sizes(5, 5) == (5,)
    # growth g: the distinct ceil(n0 g^j) below n_max (ceil(62.5) = 63; 1.5 and 2.25 round up to 2 and 3)
    assert bounds.look_sizes(32, 100, 1.25) == (32, 40, 50, 63, 79, 98, 100)
    assert bounds.look_sizes(1, 6, 1.5) == (1, 2, 3, 4, 6)
    assert bounds.look_sizes(32, 1000) == bounds.look_sizes(32, 1000, 1.25)  # the default growth
    assert len(bounds.look_sizes(32, 1000, 1.25)) == 17


@pytest.mark.parametrize("growth", [1.0, 0.5, float("nan"), float("inf"), "2"])
def test_look_sizes_refuses_growth_not_above_one(growth):
    with pytest.raises(ValueError, match=r"growth \(n_\(j\+1\) / n_j\) must be a finite number > 1"):
        bounds.look_sizes(32, 100, growth)


def test_look_alphas_pinned_and_sum_to_alpha():
    assert bounds.look_alphas(5, 0.001) == pytest.approx((0.0002,) * 5, rel=1e-15)
    assert bounds.look_alphas(5, 0.1, "decreasing") == pytest.approx((0.05, 0.025, 0.0125, 0.00625, 0.00625),
                                                                      rel=1e-15)
    assert bounds.look_alphas(1, 0.01, "decreasing") == (0.01,)
    assert bounds.look_alphas(3, 0.001, "final") == pytest.approx((0.00025, 0.00025, 0.0005), rel=1e-15)
    assert bounds.look_alphas(1, 0.01, "final") == (0.01,)
    for looks in range(1, 12):
        for spending in bounds.SPENDING:
            assert math.fsum(bounds.look_alphas(looks, 0.001, spending)) == pytest.approx(0.001, rel=1e-12)


def _exact_inner_ranks(n: int, sigma: float, eps: float, alpha: float) -> tuple[int | None, int | None, float]:
    """Brute force of inner_ranks from its definition (40-digit binomial sums); also the
    closest tail-to-threshold gap."""
    p_lo, p_hi = mpmath.ncdf(-eps / sigma), mpmath.ncdf(eps / sigma)
    conf = 1 - mpmath.mpf(alpha) / 2

    def pmf(p: mpmath.mpf) -> list[mpmath.mpf]:
        return [mpmath.binomial(n, i) * p**i * (1 - p) ** (n - i) for i in range(n + 1)]

    lower_pmf, upper_pmf = pmf(p_lo), pmf(p_hi)
    at_most = [mpmath.fsum(lower_pmf[:k]) for k in range(1, n + 1)]  # P[B <= k - 1], k = 1..n
    at_least = [mpmath.fsum(upper_pmf[k:]) for k in range(1, n + 1)]  # P[B >= k]
    lower = [k for k in range(1, n + 1) if at_most[k - 1] >= conf]
    upper = [k for k in range(1, n + 1) if at_least[k - 1] >= conf]
    gap = min(abs(float(t - conf)) for t in at_most + at_least)
    return (min(lower) if lower else None), (max(upper) if upper else None), gap


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 120), eps=st.floats(0.0, 0.3), alpha=st.sampled_from([0.5, 0.1, 0.01, 0.001]))
def test_inner_ranks_match_exact_binomial_tails(n, eps, alpha):
    k_lower, k_upper, gap = _exact_inner_ranks(n, 0.12, eps, alpha)
    if gap > 1e-9:  # a tail within float error of the threshold is undecidable in doubles
        assert bounds.inner_ranks(n, 0.12, eps, alpha) == (k_lower, k_upper)


def test_inner_ranks_mirror_and_lie_inside_the_certificate():
    for n in (50, 256, 1000):
        k_inner_lower, k_inner_upper = bounds.inner_ranks(n, 0.12, 0.05, 0.001)
        k_lower, k_upper = bounds.bound_ranks(n, 0.12, 0.05, 0.001)
        assert k_inner_upper == n + 1 - k_inner_lower  # p_upper = 1 - p_lower
        assert k_lower < k_inner_lower and k_inner_upper < k_upper


def test_sequential_looks_pinned_default_setting():
    """n0 64, n_max 1000, sigma 0.12, eps 0.05, alpha 0.001, equal spending: the README's looks."""
    looks = bounds.sequential_looks(64, 1000, 0.12, 0.05, 0.001, **PROOF_DOUBLING)
    assert [(l.n, l.k_lower, l.k_upper, l.k_inner_lower, l.k_inner_upper) for l in looks] == [
        (64, 9, 56, None, None),
        (128, 24, 105, None, None),
        (256, 58, 199, 118, 139),
        (512, 133, 380, 217, 296),
        (1000, 281, 720, 398, 603),
    ]
    for look in looks:
        assert look.alpha == pytest.approx(0.0002)
        assert look.alpha_certificate + look.alpha_futility == pytest.approx(look.alpha, rel=1e-15)
        assert look.alpha_futility == (0.0 if look.n < 256 else pytest.approx(0.0001))
        # the ranks are those of the pure functions at the look's share of alpha
        assert (look.k_lower, look.k_upper) == bounds.bound_ranks(look.n, 0.12, 0.05, look.alpha_certificate)
        if look.has_futility_test:
            assert (look.k_inner_lower, look.k_inner_upper) == bounds.inner_ranks(
                look.n, 0.12, 0.05, look.alpha_futility)
    assert bounds.single_look(1000, 0.12, 0.05, 0.001) == bounds.Look(1000, 0.001, 0.001, 0.0, 290, 711, None, None)


def test_futility_test_is_on_exactly_where_it_can_fire():
    for spending in bounds.SPENDING:
        for look in bounds.sequential_looks(64, 4096, 0.25, 0.1, 0.01, spending, "proof", growth=2.0):
            k_lo, k_hi = bounds.inner_ranks(look.n, 0.25, 0.1, bounds.FUTILITY_SHARE * look.alpha)
            can_fire = k_lo is not None and k_hi is not None and k_lo < k_hi
            assert look.has_futility_test == can_fire
            assert look.alpha_futility == (bounds.FUTILITY_SHARE * look.alpha if can_fire else 0.0)


def test_prediction_levels_against_their_binomial_definition():
    """a is the smallest level with P[Binomial(n_max, a) <= k_lower - 1] <= gamma/2, b the largest with
    P[Binomial(n_max, b) >= k_upper] <= gamma/2, for the fixed-n ranks (290, 711) of the default setting."""
    gamma = 0.025
    a, b = bounds.prediction_levels(1000, 0.12, 0.05, 0.001, gamma)
    assert stats.binom.cdf(289, 1000, a) == pytest.approx(gamma / 2, rel=1e-9)
    assert stats.binom.sf(710, 1000, b) == pytest.approx(gamma / 2, rel=1e-9)
    assert stats.binom.cdf(289, 1000, a - 1e-6) > gamma / 2 and stats.binom.sf(710, 1000, b + 1e-6) > gamma / 2
    p_lower, p_upper = bounds.percentile_levels(0.05, 0.12)
    assert 290 / 1000 < a < p_lower and p_upper < b < 711 / 1000  # between the fixed-n ranks and the levels
    assert b == pytest.approx(1 - a, abs=2e-3)  # nearly mirrored (the ranks are: 290 + 711 = 1001)


def test_prediction_looks_give_the_certificate_all_of_alpha():
    looks = bounds.sequential_looks(64, 1000, 0.12, 0.05, 0.001, futility="prediction", futility_error=0.05, spending="equal", growth=2.0)
    a, b = bounds.prediction_levels(1000, 0.12, 0.05, 0.001, 0.025)
    proof = bounds.sequential_looks(64, 1000, 0.12, 0.05, 0.001, **PROOF_DOUBLING)
    for look, proven in zip(looks, proof):
        assert look.futility == "prediction" and look.alpha_futility == 0.0
        assert look.alpha_certificate == look.alpha == pytest.approx(0.0002)
        assert (look.k_lower, look.k_upper) == bounds.bound_ranks(look.n, 0.12, 0.05, 0.0002)
        assert look.k_lower >= proven.k_lower and look.k_upper <= proven.k_upper  # never wider
        # the inner ranks: the definition of inner_ranks at the levels a, b and error 0.05 / (2 * 5)
        ks = np.arange(1, look.n + 1)
        k_lo = ks[stats.binom.cdf(ks - 1, look.n, a) >= 1 - 0.005 / 2]
        k_hi = ks[stats.binom.sf(ks - 1, look.n, b) >= 1 - 0.005 / 2]
        assert look.has_futility_test and look.futility_error == pytest.approx(0.005)
        assert (look.k_inner_lower, look.k_inner_upper) == (k_lo[0], k_hi[-1])
        assert look.k_lower < look.k_inner_lower < look.k_inner_upper < look.k_upper
    assert [(l.n, l.k_inner_lower, l.k_inner_upper) for l in looks] == [
        (64, 32, 33), (128, 57, 72), (256, 105, 152), (512, 196, 317), (1000, 365, 636)]


def test_futility_setting_and_errors():
    assert bounds.futility_setting("proof", 0.05) == "proof"
    assert bounds.futility_setting("prediction", 0.05) == "prediction 0.05"
    with pytest.raises(ValueError, match="futility must be one of"):
        bounds.futility_setting("maybe", 0.05)
    with pytest.raises(ValueError, match="futility must be one of"):
        bounds.sequential_looks(64, 1000, 0.12, 0.05, 0.001, futility="maybe")
    with pytest.raises(ValueError, match="futility_error must lie strictly between 0 and 1"):
        bounds.sequential_looks(64, 1000, 0.12, 0.05, 0.001, futility="prediction", futility_error=0.0)
    with pytest.raises(ValueError, match="gamma must lie strictly between 0 and 1"):
        bounds.prediction_levels(1000, 0.12, 0.05, 0.001, 1.0)
    with pytest.raises(ValueError, match="n_max=10 samples certify no interval"):
        bounds.prediction_levels(10, 0.12, 0.05, 0.001, 0.05)
    assert bounds.futility_setting("power", 0.05) == "power 0.05"
    with pytest.raises(ValueError, match="futility_error must lie strictly between 0 and 1"):
        bounds.sequential_looks(64, 1000, 0.12, 0.05, 0.001, futility="power", futility_error=1.0)
    with pytest.raises(ValueError, match="n_max=10 samples certify no interval .*raise n_max"):
        bounds.sequential_looks(10, 10, 0.12, 0.05, 0.001, futility="power")


# --- the "power" futility test: conditional power by the Bayesian-bootstrap predictive ------------


def _exact_power(row: np.ndarray, n_final: int, k_lower: int, k_upper: int, delta: float) -> float:
    """The predictive probability by enumeration: under a Polya urn started with the n sorted values,
    the multiplicities of n_final - n more draws are uniform over all compositions (Bose-Einstein),
    so the probability is the certifying fraction of the compositions."""
    n, extra = len(row), n_final - len(row)
    certifying = total = 0
    for bars in itertools.combinations(range(extra + n - 1), n - 1):  # stars and bars
        cuts = (-1, *bars, extra + n - 1)
        counts = np.array([cuts[i + 1] - cuts[i] - 1 for i in range(n)]) + 1
        values = np.repeat(row, counts)
        lower, median, upper = values[k_lower - 1], values[math.ceil(n_final / 2) - 1], values[k_upper - 1]
        certifying += bool(lower >= median - delta and upper <= median + delta)
        total += 1
    assert total == math.comb(extra + n - 1, n - 1)
    return certifying / total


@pytest.mark.parametrize("delta, certifying", [(0.5, 77), (1.0, 161), (1.5, 230), (2.0, 307)])
def test_conditional_power_matches_enumeration(delta, certifying):
    """5 samples, 7 more to come, ranks (3, 10) of 12: 330 equally likely compositions, of which the
    pinned number certify. 20,000 draws estimate that fraction within a binomial tolerance at LEVEL."""
    row = np.array([0.0, 1.0, 1.5, 2.0, 3.5])
    exact = _exact_power(row, 12, 3, 10, delta)
    assert exact == certifying / 330
    draws = 20_000
    estimate = float(bounds.conditional_power(row[None], 12, 3, 10, delta, draws=draws)[0])
    low, high = stats.binom.interval(1 - LEVEL, draws, exact)
    assert low / draws <= estimate <= high / draws, (estimate, exact)


def test_conditional_power_pinned_cases_and_determinism():
    constant = np.full((1, 20), 3.0)
    assert bounds.conditional_power(constant, 1000, 290, 711, 0.0).tolist() == [1.0]  # all order statistics equal
    wide = np.sort(np.random.default_rng(0).standard_normal((1, 50)) * 100.0, axis=1)
    assert bounds.conditional_power(wide, 1000, 290, 711, 1e-3).tolist() == [0.0]
    rows = np.sort(np.random.default_rng(1).standard_normal((3, 40)), axis=1)
    both = bounds.conditional_power(rows, 200, 60, 141, 0.6)
    assert ((both >= 0) & (both <= 1)).all() and len(set(both.tolist())) > 1
    # a row's value depends on that row only: the same in another batch, in another order
    assert bounds.conditional_power(rows[::-1], 200, 60, 141, 0.6).tolist() == both[::-1].tolist()
    assert bounds.conditional_power(rows[1:2], 200, 60, 141, 0.6).tolist() == both[1:2].tolist()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: bounds.conditional_power(np.zeros(5), 10, 2, 8, 0.1),
         "shape \\(A, n\\) with n >= 1, got \\(5,\\)"),
        (lambda: bounds.conditional_power(np.zeros((1, 10)), 10, 2, 8, 0.1),
         "n_final must exceed the samples per row \\(10\\), got 10"),
        (lambda: bounds.conditional_power(np.zeros((1, 5)), 10, 8, 2, 0.1),
         "need 1 <= k_lower <= k_upper <= n_final=10"),
        (lambda: bounds.conditional_power(np.zeros((1, 5)), 10, 2, 11, 0.1), "k_upper=11"),
        (lambda: bounds.conditional_power(np.zeros((1, 5)), 10, 2, 8, -1.0), "delta must be a finite number >= 0"),
        (lambda: bounds.conditional_power(np.zeros((1, 5)), 10, 2, 8, 0.1, draws=0),
         "draws must be an integer >= 1"),
    ],
)
def test_conditional_power_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_power_looks():
    """Every look but the last carries the fixed-n certificate to predict (n_max, ranks at the whole
    alpha) and its error; no alpha goes to the test, so each certificate gets all of alpha_j."""
    looks = bounds.sequential_looks(32, 1000, 0.12, 0.05, 0.001, "final", "power", 0.05, 1.25)
    assert [look.n for look in looks] == list(bounds.look_sizes(32, 1000, 1.25))
    final = bounds.bound_ranks(1000, 0.12, 0.05, 0.001)
    for look, alpha_j in zip(looks, bounds.look_alphas(len(looks), 0.001, "final")):
        assert look.futility == "power" and look.alpha_futility == 0.0 and look.alpha_certificate == alpha_j
        assert (look.k_lower, look.k_upper) == bounds.bound_ranks(look.n, 0.12, 0.05, alpha_j)
        assert look.k_inner_lower is None and look.k_inner_upper is None
        if look.n < 1000:
            assert look.has_futility_test and look.futility_error == 0.05
            assert (look.n_final, look.k_final_lower, look.k_final_upper) == (1000, *final)
        else:
            assert not look.has_futility_test and look.futility_error == 0.0
    assert looks[-1].alpha == pytest.approx(0.0005, rel=1e-15)


@pytest.mark.parametrize("delta, decision", [(4.0, "certified"), (3.99, "undecided"), (0.5, "futile")])
def test_power_decision_by_hand(delta, decision):
    """The hand look as a power look predicting n_final 30 with ranks (8, 23) of the values 0..9:
    certified at delta 4 (the power is not asked); at 3.99 most completions certify (undecided); at
    0.5 only a completion giving one value all ranks 8..23 would (multiplicity >= 16: at most
    20,020 of the 10,015,005 equally likely compositions, 0.002), so it is futile."""
    look = dataclasses.replace(HAND_LOOK, futility="power", futility_error=0.05, alpha_futility=0.0,
                               k_inner_lower=None, k_inner_upper=None, n_final=30, k_final_lower=8,
                               k_final_upper=23)
    assert bounds.look_decisions(np.arange(10.0)[None], look, delta).decision.tolist() == [decision]


# --- the decision of one look -------------------------------------------------------------------


HAND_LOOK = bounds.Look(n=10, alpha=0.2, alpha_certificate=0.1, alpha_futility=0.1, k_lower=2, k_upper=9,
                        k_inner_lower=4, k_inner_upper=7)


@pytest.mark.parametrize(
    "delta, decision",
    [
        (4.0, "certified"),  # median 4: 4 - 4 <= y_(2) = 1 and y_(9) = 8 <= 4 + 4 (bounds included)
        (3.99, "undecided"),
        (1.5, "undecided"),  # inner width y_(7) - y_(4) = 3 is not > 2 * 1.5
        (1.49, "not certifiable"),
    ],
)
def test_look_decision_by_hand(delta, decision):
    outcome = bounds.look_decisions(np.arange(10.0)[None], HAND_LOOK, delta)
    assert outcome.decision.tolist() == [decision]
    assert (outcome.lower[0], outcome.median[0], outcome.upper[0]) == (1.0, 4.0, 8.0)


@pytest.mark.parametrize("delta, decision", [(1.5, "undecided"), (1.49, "futile"), (4.0, "certified")])
def test_futile_decision_by_hand(delta, decision):
    """A prediction look reads the same inner ranks (4, 7) and answers "futile" where the proof look
    answers "not certifiable"."""
    look = dataclasses.replace(HAND_LOOK, futility="prediction", futility_error=0.01, alpha_futility=0.0)
    assert bounds.look_decisions(np.arange(10.0)[None], look, delta).decision.tolist() == [decision]


def test_futile_rarely_loses_a_fixed_n_certificate():
    """Per trial, "futile" at some look while the fixed-n certificate (n_max, the whole alpha) on the
    same first n_max draws certifies: at most futility_error of the trials (one-sided binomial check at
    LEVEL), on the linear model (1000 trials, n0 64, n_max 1024, alpha 0.1, futility_error 0.2), at
    deltas from 0.6 to 1 times the median needed delta. There the test fires on every trial (0.6) or
    none, and fixed n certifies none (0.6) to half of them (1.0), so both sides of the check are
    exercised; the certificates keep their 1 - alpha coverage."""
    sigma, eps, alpha, trials, n_max = 1.0, 0.5, 0.1, 1000, 1024
    y = MU + SCALE * np.random.default_rng(4).standard_normal((trials, n_max))
    h_lo, h_hi = MU + SCALE * stats.norm.ppf(P_LOWER), MU + SCALE * stats.norm.ppf(P_UPPER)
    fixed_look = [bounds.single_look(n_max, sigma, eps, alpha)]
    looks = bounds.sequential_looks(64, n_max, sigma, eps, alpha, futility="prediction", futility_error=0.2, spending="equal", growth=2.0)
    need = bounds.sequential_decisions(y, fixed_look, 0.0)
    median_need = float(np.median(np.maximum(need.median - need.lower, need.upper - need.median)))
    fired, certified = {}, {}
    for factor in (0.6, 0.7, 0.95, 1.0):
        delta = factor * median_need
        fixed = bounds.sequential_decisions(y, fixed_look, delta).decision == bounds.CERTIFIED
        out = bounds.sequential_decisions(y, looks, delta)
        futile = out.decision == bounds.FUTILE
        assert (futile & fixed).sum() <= tolerance(trials, 0.2), factor
        assert ((out.lower > h_lo) | (out.upper < h_hi)).sum() <= tolerance(trials, alpha), factor
        fired[factor], certified[factor] = int(futile.sum()), int(fixed.sum())
        if factor == 0.6:
            assert out.n_used.mean() < 0.75 * n_max  # most far images stop before n_max
    assert fired[0.6] == trials and certified[0.6] == 0
    assert certified[1.0] >= 0.4 * trials
    assert sum(fired.values()) - fired[0.6] < 0.5 * trials  # near delta it (rightly) waits


def test_look_without_ranks_is_never_certified_and_reports_infinite_sides():
    look = bounds.Look(5, 0.1, 0.1, 0.0, None, None, None, None)
    outcome = bounds.look_decisions(np.zeros((2, 5)), look, 100.0)
    assert outcome.decision.tolist() == ["undecided", "undecided"]
    assert outcome.lower.tolist() == [-math.inf] * 2 and outcome.upper.tolist() == [math.inf] * 2


def test_sequential_decisions_stop_at_the_first_decisive_look():
    looks = bounds.sequential_looks(16, 128, 1.0, 0.5, 0.1, **PROOF_DOUBLING)
    rng = np.random.default_rng(0)
    y = rng.standard_normal((3, 128)) * np.array([[1e-3], [100.0], [1.0]])  # tiny, huge, borderline spread
    out = bounds.sequential_decisions(y, looks, delta=0.75)
    assert out.decision.tolist() == ["certified", "not certifiable", "undecided"]
    assert out.n_used.tolist() == [16, 64, 128]  # the futility test is on from n = 64
    for i, n in enumerate(out.n_used):
        first = np.sort(y[i, :n])
        look = next(l for l in looks if l.n == n)
        assert (out.lower[i], out.median[i], out.upper[i]) == (
            first[look.k_lower - 1], first[math.ceil(n / 2) - 1], first[look.k_upper - 1])


# --- coverage under optional stopping (closed-form models, samples drawn directly) ----------------

SIGMA, EPS, ALPHA, N0, N_MAX, TRIALS = 1.0, 0.5, 0.1, 16, 128, 2000
P_LOWER, P_UPPER = stats.norm.cdf(-EPS / SIGMA), stats.norm.cdf(EPS / SIGMA)

# Scores f(x + G) = g(mu + s Z), Z standard normal (a linear model and monotone transforms of it).
# Percentiles: h_q = g(mu + s Phi^-1(q)) for g nondecreasing and left-continuous, and
# h_q = g(mu + s Phi^-1(1 - q)) for g decreasing.
TRANSFORMS = {
    "linear": (lambda t: t, False),
    "exp (nonlinear, increasing)": (np.exp, False),
    "minus cube (nonlinear, decreasing)": (lambda t: -(t**3), True),
    "ceil to quarters (atoms)": (lambda t: np.ceil(4 * t) / 4, False),
}
MU, SCALE = 0.3, 0.8


def _truth(name: str) -> tuple[float, float]:
    g, decreasing = TRANSFORMS[name]
    levels = (1 - P_LOWER, 1 - P_UPPER) if decreasing else (P_LOWER, P_UPPER)
    return tuple(float(g(MU + SCALE * stats.norm.ppf(q))) for q in levels)


def _draws(name: str, seed: int) -> np.ndarray:
    g, _ = TRANSFORMS[name]
    return g(MU + SCALE * np.random.default_rng(seed).standard_normal((TRIALS, N_MAX)))


def _every_look(y: np.ndarray, looks, delta: float) -> list[bounds.LookOutcome]:
    return [bounds.look_decisions(np.sort(y[:, : look.n], axis=1), look, delta) for look in looks]


def _statement_fails(y: np.ndarray, look: bounds.Look, outcome: bounds.LookOutcome, h_lo: float, h_hi: float):
    """Per trial: does any statement of this look fail (certificate, and the inner bounds of a "not
    certifiable" test where on; a "futile" test states nothing about h_{p_lower}, h_{p_upper})?"""
    fails = (outcome.lower > h_lo) | (outcome.upper < h_hi)
    if look.has_futility_test and look.futility == "proof":
        s = np.sort(y[:, : look.n], axis=1)
        fails |= (s[:, look.k_inner_lower - 1] < h_lo) | (s[:, look.k_inner_upper - 1] > h_hi)
    return fails


@pytest.mark.parametrize("futility", ["proof", "prediction"])
@pytest.mark.parametrize("spending", bounds.SPENDING)
@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_coverage_under_optional_stopping(name, spending, futility):
    """>= 1 - alpha coverage for the procedure's own stopping rule, for an adversarial rule that
    stops where the interval is narrowest, and for the union event itself (any statement of any
    look failing), which bounds every stopping rule at once; with either inner-rank futility test
    (the power test below: its own stopping rule)."""
    h_lo, h_hi = _truth(name)
    looks = bounds.sequential_looks(N0, N_MAX, SIGMA, EPS, ALPHA, spending, futility, growth=2.0)
    y = _draws(name, seed=1)
    seen: set[str] = set()
    for delta in (0.1, 0.4, 1.2):  # mostly not certifiable / undecided / certified
        out = bounds.sequential_decisions(y, looks, delta)
        seen |= set(out.decision)
        wrong_futility = (out.decision == bounds.NOT_CERTIFIABLE) & (h_hi - h_lo <= 2 * delta)
        own = (out.lower > h_lo) | (out.upper < h_hi) | wrong_futility
        assert own.sum() <= tolerance(TRIALS, ALPHA), (delta, own.sum())
        outcomes = _every_look(y, looks, delta)
        widths = np.stack([o.upper - o.lower for o in outcomes])
        best = widths.argmin(axis=0)  # the look where the interval looks best
        lower = np.stack([o.lower for o in outcomes])[best, np.arange(TRIALS)]
        upper = np.stack([o.upper for o in outcomes])[best, np.arange(TRIALS)]
        narrowest = (lower > h_lo) | (upper < h_hi)
        assert narrowest.sum() <= tolerance(TRIALS, ALPHA), (delta, narrowest.sum())
    union = np.zeros(TRIALS, dtype=bool)
    for look, outcome in zip(looks, outcomes):
        union |= _statement_fails(y, look, outcome, h_lo, h_hi)
    assert union.sum() <= tolerance(TRIALS, ALPHA), union.sum()
    stop = bounds.NOT_CERTIFIABLE if futility == "proof" else bounds.FUTILE
    assert seen == {bounds.CERTIFIED, stop, bounds.UNDECIDED}  # every decision, the futility test's included


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_coverage_with_the_power_test(name):
    """The power test spends no alpha and only decides when to stop: the procedure's own rule keeps
    >= 1 - alpha coverage (binomial tolerance at LEVEL), on looks of growth 1.5 with final spending."""
    h_lo, h_hi = _truth(name)
    looks = bounds.sequential_looks(N0, N_MAX, SIGMA, EPS, ALPHA, "final", "power", 0.05, 1.5)
    y = _draws(name, seed=2)
    seen: set[str] = set()
    for delta in (0.1, 0.4, 1.2):
        out = bounds.sequential_decisions(y, looks, delta)
        seen |= set(out.decision)
        misses = (out.lower > h_lo) | (out.upper < h_hi)
        assert misses.sum() <= tolerance(TRIALS, ALPHA), (delta, misses.sum())
    assert {bounds.CERTIFIED, bounds.FUTILE} <= seen


def test_each_look_fails_with_its_exact_binomial_probability():
    """On the linear model P[y_(k) > h_{p_lower}] = P[Binomial(n, p_lower) <= k - 1] exactly (and
    the mirror on the upper side); a two-sided binomial check at LEVEL per look and side. This
    catches a rank read one place off, which coverage alone might not."""
    h_lo, h_hi = _truth("linear")
    looks = bounds.sequential_looks(N0, N_MAX, SIGMA, EPS, ALPHA, **PROOF_DOUBLING)
    y = _draws("linear", seed=2)
    for look, outcome in zip(looks, _every_look(y, looks, 0.4)):
        for count, p in [
            ((outcome.lower > h_lo).sum(), stats.binom.cdf(look.k_lower - 1, look.n, P_LOWER)),
            ((outcome.upper < h_hi).sum(), stats.binom.sf(look.k_upper - 1, look.n, P_UPPER)),
        ]:
            lo, hi = stats.binom.ppf(LEVEL / 2, TRIALS, p), stats.binom.isf(LEVEL / 2, TRIALS, p)
            assert lo <= count <= hi, (look.n, count, p * TRIALS)


def test_repeated_fixed_n_tests_fail_the_same_check():
    """Without alpha spending (alpha at every look), the union over looks fails far more often
    than alpha: the check above would catch a procedure that forgot the schedule."""
    h_lo, h_hi = _truth("linear")
    naive = [bounds.single_look(n, SIGMA, EPS, ALPHA) for n in bounds.look_sizes(N0, N_MAX, 2)]
    y = _draws("linear", seed=1)
    union = np.zeros(TRIALS, dtype=bool)
    for look, outcome in zip(naive, _every_look(y, naive, 0.4)):
        union |= _statement_fails(y, look, outcome, h_lo, h_hi)
    assert union.sum() > tolerance(TRIALS, ALPHA)


def _look(n: int, k_lower: int | None, k_upper: int | None) -> bounds.Look:
    return bounds.Look(n, 0.1, 0.1, 0.0, k_lower, k_upper, None, None)


def test_certificate_miss_probability_of_one_look_is_its_binomial_tail():
    look = bounds.single_look(1000, 0.12, 0.05, 0.001)
    p_lower, p_upper = bounds.percentile_levels(0.05, 0.12)
    lower, upper = bounds.certificate_miss_probability([look], 0.12, 0.05)
    assert lower == pytest.approx(stats.binom.cdf(look.k_lower - 1, 1000, p_lower), rel=1e-9)
    assert upper == pytest.approx(stats.binom.sf(look.k_upper - 1, 1000, p_upper), rel=1e-9)


def test_certificate_miss_probability_against_enumeration():
    """Looks at n = 3, 5, 8 with hand-chosen ranks (the first look certifies one side only),
    against the sum over all 2^8 outcomes of the indicators "sample at or below h_{p_lower}"
    (Bernoulli(p_lower)) and "sample below h_{p_upper}" (Bernoulli(p_upper))."""
    import itertools

    looks = [_look(3, None, 3), _look(5, 1, 5), _look(8, 2, 7)]
    expected = []
    for side, p in (("lower", P_LOWER), ("upper", P_UPPER)):
        terms = []
        for bits in itertools.product((0, 1), repeat=8):
            counts = [sum(bits[: look.n]) for look in looks]
            if side == "lower":
                miss = any(look.k_lower is not None and c < look.k_lower for look, c in zip(looks, counts))
            else:
                miss = any(c >= look.k_upper for look, c in zip(looks, counts))
            if miss:
                terms.append(p ** sum(bits) * (1 - p) ** (8 - sum(bits)))
        expected.append(math.fsum(terms))
    assert bounds.certificate_miss_probability(looks, SIGMA, EPS) == pytest.approx(tuple(expected), rel=1e-12)


def test_certificate_miss_probability_matches_the_linear_model_and_the_union_bound():
    """On the linear model (continuous scores, the worst case) the fraction of trials where some
    look's lower (upper) bound misses matches the exact probability (two-sided binomial check at
    LEVEL per side); the exact value lies between the largest single look's and the union's."""
    h_lo, h_hi = _truth("linear")
    looks = bounds.sequential_looks(N0, N_MAX, SIGMA, EPS, ALPHA, **PROOF_DOUBLING)
    outcomes = _every_look(_draws("linear", seed=3), looks, 0.4)
    exact = bounds.certificate_miss_probability(looks, SIGMA, EPS)
    missed = [np.any([o.lower > h_lo for o in outcomes], axis=0), np.any([o.upper < h_hi for o in outcomes], axis=0)]
    singles = [[stats.binom.cdf(lk.k_lower - 1, lk.n, P_LOWER) for lk in looks],
               [stats.binom.sf(lk.k_upper - 1, lk.n, P_UPPER) for lk in looks]]
    for count, p, single in zip((m.sum() for m in missed), exact, singles):
        assert stats.binom.ppf(LEVEL / 2, TRIALS, p) <= count <= stats.binom.isf(LEVEL / 2, TRIALS, p), (count, p)
        assert max(single) < p < math.fsum(single) <= math.fsum(lk.alpha_certificate / 2 for lk in looks)


# --- SmoothedIQA.certify_sequential -------------------------------------------------------------


class Recorder(nn.Module):
    """A model that records the scores and batch sizes of every call and its training flag."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.scores: list[torch.Tensor] = []
        self.sizes: list[int] = []
        self.training_flags: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.model(x)
        self.scores.append(scores.detach().clone())
        self.sizes.append(x.shape[0])
        self.training_flags.append(self.training)
        return scores


def _images(count: int, seed: int = 0, shape=(3, 4, 4)) -> torch.Tensor:
    return torch.rand((count,) + shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_certify_sequential_coverage_on_a_linear_model():
    """1000 images in one batch, each an independent trial of the real sampling path."""
    model, sigma, eps, alpha, images = Linear(), 0.25, 0.125, 0.1, 1000
    x = _images(images, seed=3)
    with torch.no_grad():
        mu, w_norm = model(x), float(model.w.norm())
    h_lo, h_hi = mu - eps * w_norm, mu + eps * w_norm  # sigma |w| Phi^-1(p_lower) = -eps |w|
    smoothed = SmoothedIQA(model, sigma, alpha=alpha, batch_size=500, clip=False, seed=0)
    for delta in (0.5 * eps * w_norm, 1.6 * eps * w_norm):
        res = smoothed.certify_sequential(x, eps, delta, n0=N0, n_max=N_MAX, **PROOF_DOUBLING)
        futile = torch.tensor([d == bounds.NOT_CERTIFIABLE for d in res.decision])
        fails = (res.lower > h_lo) | (res.upper < h_hi) | (futile & (h_hi - h_lo <= 2 * delta))
        assert int(fails.sum()) <= tolerance(images, alpha)
        assert len(set(res.decision)) >= 2  # the setting exercises more than one decision


@pytest.mark.parametrize("futility", bounds.FUTILITY)
def test_live_run_equals_the_replay_of_its_own_draws(futility):
    """One image, n0 and every look's increment a multiple of batch_size: certify_sequential
    draws exactly the first n_j values of the fixed-n stream, so its answer is
    bounds.sequential_decisions on those draws (earlier samples kept, reused stream)."""
    model, x = Recorder(Linear()), _images(1, seed=5)
    smoothed = SmoothedIQA(model, 0.25, alpha=0.1, batch_size=16, clip=False, seed=11)
    smoothed.sample(x, 128)
    draws = torch.cat(model.scores).numpy()[None]
    looks = bounds.sequential_looks(16, 128, 0.25, 0.125, 0.1, futility=futility, futility_error=0.3, spending="equal", growth=2.0)
    decisions = set()
    for delta in (0.02, 0.06, 0.5):
        replay = bounds.sequential_decisions(draws, looks, delta)
        res = smoothed.certify_sequential(x, 0.125, delta, n0=16, n_max=128, futility=futility, futility_error=0.3, spending="equal",
                                       growth=2.0)
        decisions |= set(res.decision)
        assert res.futility == futility and res.to_records()[0]["futility"] == (
            "proof" if futility == "proof" else f"{futility} 0.3")
        assert res.decision == tuple(replay.decision)
        assert res.n_used.tolist() == replay.n_used.tolist()
        for name in ("lower", "median", "upper"):
            assert getattr(res, name).tolist() == getattr(replay, name).tolist()
    assert decisions == {bounds.CERTIFIED, bounds.NOT_CERTIFIABLE if futility == "proof" else bounds.FUTILE}


def test_live_run_equals_the_replay_with_any_growth():
    """batch_size 1: the noise stream is drawn one copy at a time whatever the looks, so looks of
    growth 1.25 (increments 8, 10, 13, ...) still read exactly the first n_j recorded draws; with
    final spending and the power test, as the README's fastest setting."""
    model, x = Recorder(Linear()), _images(1, seed=5)
    smoothed = SmoothedIQA(model, 0.25, alpha=0.1, batch_size=1, clip=False, seed=11)
    smoothed.sample(x, 200)
    draws = torch.cat(model.scores).numpy()[None]
    options = {"n0": 32, "n_max": 200, "growth": 1.25, "spending": "final", "futility": "power", "futility_error": 0.05}
    looks = bounds.sequential_looks(32, 200, 0.25, 0.125, 0.1, "final", "power", 0.05, 1.25)
    decisions = set()
    for delta in (0.02, 0.07, 0.5):
        replay = bounds.sequential_decisions(draws, looks, delta)
        res = smoothed.certify_sequential(x, 0.125, delta, **options)
        decisions |= set(res.decision)
        assert res.decision == tuple(replay.decision) and res.n_used.tolist() == replay.n_used.tolist()
        assert int(res.n_used[0]) in bounds.look_sizes(32, 200, 1.25)
        record = res.to_records()[0]
        assert (record["growth"], record["spending"], record["futility"]) == (1.25, "final", "power 0.05")
    assert bounds.CERTIFIED in decisions and bounds.FUTILE in decisions


class SpreadByImage(nn.Module):
    """Scores whose noise spread is set by each image's first channel: c * (w . rest), c the mean
    of channel 0 (nearly noise-free: it averages 64 pixels), so one batch mixes decisions."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1, 1, 2 * 64, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0].mean(dim=(1, 2)) * (x[:, 1:].flatten(1) @ self.w)


def test_batched_images_continue_together_and_keep_their_samples():
    x = torch.full((3, 3, 8, 8), 0.5, dtype=torch.float64)
    x[:, 0] = torch.tensor([0.001, 0.3, 1.0], dtype=torch.float64)[:, None, None]
    model = Recorder(SpreadByImage()).train()
    smoothed = SmoothedIQA(model, 0.2, alpha=0.01, batch_size=24, clip=False, seed=0)
    res = smoothed.certify_sequential(x, 0.1, 0.2, n0=32, n_max=512, **PROOF_DOUBLING)
    assert res.decision == ("certified", "undecided", "not certifiable")
    n_used = res.n_used.tolist()
    assert n_used[0] == 32 and n_used[1] == 512 and 32 < n_used[2] < 512
    # every noisy copy evaluated is one sample of one image: nothing drawn twice or lost
    assert sum(model.sizes) == sum(n_used) and max(model.sizes) <= 24
    assert not any(model.training_flags) and model.training  # eval inside, mode restored
    # rebuild each image's samples from the call log: look j draws n_j - n_{j-1} copies of every
    # image still open, image after image in input order
    scores = torch.cat(model.scores).tolist()
    per_image: list[list[float]] = [[], [], []]
    sizes = (0,) + bounds.look_sizes(32, 512, 2)
    for previous, n in zip(sizes, sizes[1:]):
        for i in range(3):
            if n_used[i] >= n:
                per_image[i] += scores[: n - previous]
                scores = scores[n - previous:]
    assert scores == []
    looks = {look.n: look for look in bounds.sequential_looks(32, 512, 0.2, 0.1, 0.01, **PROOF_DOUBLING)}
    for i in range(3):
        ordered = sorted(per_image[i])
        look = looks[n_used[i]]
        assert len(ordered) == n_used[i]
        assert res.lower[i].item() == ordered[look.k_lower - 1]
        assert res.median[i].item() == ordered[math.ceil(look.n / 2) - 1]
        assert res.upper[i].item() == ordered[look.k_upper - 1]


def test_decisions_agree_with_fixed_n_on_clear_cases():
    model, x = Linear(), _images(4, seed=7)
    w_norm = float(model.w.detach().norm())
    smoothed = SmoothedIQA(model, 0.25, n=512, alpha=0.01, clip=False, seed=1)
    fixed = smoothed.certify(x, 0.125)
    for delta, decision in ((10 * w_norm, "certified"), (0.01 * w_norm, "not certifiable")):
        within = (fixed.lower >= fixed.median - delta) & (fixed.upper <= fixed.median + delta)
        res = smoothed.certify_sequential(x, 0.125, delta, n0=32, **PROOF_DOUBLING)
        assert res.decision == (decision,) * 4
        assert res.certified.tolist() == within.tolist() == [decision == "certified"] * 4
        assert res.n_max == 512 and (res.n_used < 512).all()


def test_undecided_at_n_max_is_reported_as_such():
    """h_{p_upper} - h_{p_lower} = 2 eps |w| < 2 delta, but n_max = 64 samples are far too few to
    show it: every image ends undecided, with its n_max interval, and none is certified."""
    model, x = Linear(), _images(6, seed=8)
    w_norm = float(model.w.detach().norm())
    res = SmoothedIQA(model, 0.25, alpha=0.1, clip=False, seed=2).certify_sequential(
        x, 0.125, 1.5 * 0.125 * w_norm, n0=16, n_max=64, **PROOF_DOUBLING)
    assert res.decision == ("undecided",) * 6
    assert res.n_used.tolist() == [64] * 6 and not res.certified.any()
    records = res.to_records()
    assert [r["certified"] for r in records] == [False] * 6
    assert records[0]["decision"] == "undecided" and records[0]["n_used"] == 64 and records[0]["n"] == 64


def test_constant_model_certifies_at_the_first_look():
    def constant(z: torch.Tensor) -> torch.Tensor:
        return torch.full((z.shape[0],), 4.2, dtype=z.dtype)

    res = SmoothedIQA(constant, 0.12, seed=0).certify_sequential(_images(2), 0.05, 0.0)
    assert res.decision == ("certified", "certified")
    assert res.n_used.tolist() == [bounds.DEFAULT_SCHEME.n0] * 2 and res.width.tolist() == [0.0, 0.0]


@pytest.mark.cuda
def test_cuda_sequential_samples_on_the_model_device():
    model = Recorder(Linear().cuda())
    res = SmoothedIQA(model, 0.25, alpha=0.1, clip=False, seed=0).certify_sequential(_images(2), 0.1, 0.1, n0=16,
                                                                                       n_max=64)
    assert all(s.device.type == "cuda" for s in model.scores)
    assert res.lower.device.type == "cpu" and len(res.decision) == 2


# --- validation errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eps": -0.1}, "eps must be"),
        ({"eps": float("nan")}, "eps must be"),
        ({"delta": -1.0}, "delta must be"),
        ({"delta": float("inf")}, "delta must be"),
        ({"n0": 0}, "n0 \\(the samples of the first look\\) must be an integer >= 1"),
        ({"n0": 16.5}, "n0 \\(the samples"),
        ({"n_max": 0}, "n_max \\(the samples of the last look\\)"),
        ({"n0": 128, "n_max": 64}, "n0 must be <= n_max, got n0=128 > n_max=64"),
        ({"spending": "linear"}, "spending must be one of \\('equal', 'decreasing', 'final'\\), got 'linear'"),
        ({"n0": 4}, "n0=4 samples cannot certify eps=0.05 at the first look's alpha .*; raise n0"),
    ],
)
def test_certify_sequential_argument_errors(kwargs, match):
    args = {"eps": 0.05, "delta": 0.1, "n0": 32, "n_max": 128} | kwargs
    smoothed = SmoothedIQA(Linear(), 0.12, alpha=0.001)
    with pytest.raises(ValueError, match=match):
        smoothed.certify_sequential(_images(1), args.pop("eps"), args.pop("delta"), **args)


@pytest.mark.parametrize(
    "x, error, match",
    [
        (np.zeros((1, 3, 4, 4)), TypeError, "must be a torch.Tensor"),
        (torch.zeros((3, 4, 4), dtype=torch.float64), ValueError, "shape \\(B, C, H, W\\)"),
        (torch.full((1, 3, 4, 4), 2.0, dtype=torch.float64), ValueError, "pixels in \\[0, 1\\]"),
    ],
)
def test_certify_sequential_input_errors(x, error, match):
    with pytest.raises(error, match=match):
        SmoothedIQA(Linear(), 0.12).certify_sequential(x, 0.05, 0.1, n0=32, n_max=64)


def test_non_finite_score_names_the_original_image_index():
    def nan_for_bright(z: torch.Tensor) -> torch.Tensor:
        return torch.where(z[:, 0, 0, 0] > 0.5, torch.nan, z.mean(dim=(1, 2, 3)))

    x = torch.stack([torch.zeros(3, 4, 4), torch.full((3, 4, 4), 0.2), torch.ones(3, 4, 4)]).double()
    with pytest.raises(ValueError, match="non-finite score .* image index 2"):
        SmoothedIQA(nan_for_bright, 1e-6, alpha=0.1).certify_sequential(x, 0.0, 1.0, n0=8, n_max=16)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: bounds.look_sizes(0, 10), "n0 \\(the samples"),
        (lambda: bounds.look_sizes(4, 2.5), "n_max \\(the samples"),
        (lambda: bounds.look_alphas(0, 0.1), "looks must be an integer >= 1"),
        (lambda: bounds.look_alphas(3, 1.0), "alpha must lie"),
        (lambda: bounds.look_alphas(3, 0.1, "Equal"), "spending must be one of"),
        (lambda: bounds.inner_ranks(0, 0.1, 0.1, 0.1), "n \\(the number of noise samples\\)"),
        (lambda: bounds.inner_ranks(10, 0.1, 0.1, 0.0), "alpha must lie"),
        (lambda: bounds.inner_ranks(10, 0.0, 0.1, 0.1), "sigma must be"),
        (lambda: bounds.sequential_looks(16, 64, 0.1, -0.1, 0.1), "eps must be"),
        (lambda: bounds.sequential_looks(16, 64, 0.0, 0.1, 0.1), "sigma must be"),
        (lambda: bounds.look_decisions(np.zeros((2, 9)), HAND_LOOK, 1.0), "shape \\(A, 10\\) .* got \\(2, 9\\)"),
        (lambda: bounds.certificate_miss_probability([], 0.1, 0.1), "non-empty with strictly increasing n, got n = \\[\\]"),
        (lambda: bounds.certificate_miss_probability([HAND_LOOK, HAND_LOOK], 0.1, 0.1), "got n = \\[10, 10\\]"),
        (lambda: bounds.certificate_miss_probability([HAND_LOOK], 0.0, 0.1), "sigma must be"),
        (lambda: bounds.look_decisions(np.zeros(10), HAND_LOOK, 1.0), "shape \\(A, 10\\)"),
        (lambda: bounds.look_decisions(np.zeros((1, 10)), HAND_LOOK, -1.0), "delta must be"),
        (lambda: bounds.sequential_decisions(np.zeros((2, 9)), [HAND_LOOK], 1.0), "m >= 10 .* got \\(2, 9\\)"),
        (lambda: bounds.run_sequential(lambda a, i, j: np.zeros((len(a), 3)), 2, [HAND_LOOK], 1.0),
         "draw must return shape \\(2, 10\\) for 2 open streams and samples 0..9, got \\(2, 3\\)"),
        (lambda: bounds.run_sequential(lambda a, i, j: np.zeros((len(a), j - i)), 0, [HAND_LOOK], 1.0),
         "streams must be an integer >= 1"),
        (lambda: bounds.run_sequential(lambda a, i, j: np.zeros((len(a), j - i)), 1, [HAND_LOOK], -1.0),
         "delta must be"),
    ],
)
def test_bounds_validation_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- command line ------------------------------------------------------------------------------


@pytest.fixture
def small_image(tmp_path):
    path = tmp_path / "chelsea.png"
    Image.open(REPO / "examples" / "images" / "chelsea_clean.png").crop((60, 40, 160, 140)).save(path)
    return path


def test_cli_sequential_writes_decision_and_n_used(small_image, tmp_path, capsys):
    out = tmp_path / "r.csv"
    args = ["certify", str(small_image), "--n", "128", "--n0", "32", "--alpha", "0.1", "--seed", "0", "--quiet",
            "--out", str(out), "--device", "cpu", "--overwrite"]
    assert main(args + ["--delta", "100"]) == 0
    (row,) = list(csv.DictReader(out.open()))
    assert row["decision"] == "certified" and row["n_used"] == "32" and row["certified"] == "True"
    assert row["delta"] == "100.0" and row["n"] == "128" and row["n0"] == "32"
    err = capsys.readouterr().err
    assert "mean samples per image and radius 32" in err and "1 image(s) done now" in err  # not "certified"
    assert main(args + ["--delta", "0", "--eps", "0.1", "--futility", "proof"]) == 0
    (row,) = list(csv.DictReader(out.open()))
    assert row["decision"] in ("not certifiable", "undecided") and row["certified"] == "False"
    assert int(row["n_used"]) in bounds.look_sizes(32, 128, 1.25) and row["futility"] == "proof"
    assert row["reason"] == bounds.decision_reason(row["decision"], "proof", 0.0)
    assert main(args + ["--delta", "0", "--eps", "0.1", "--futility", "prediction", "--futility-error", "0.2"]) == 0
    (row,) = list(csv.DictReader(out.open()))
    assert row["decision"] == "futile" and row["futility"] == "prediction 0.2" and row["n_used"] == "32"
    assert row["reason"] == "futile: n_max samples would not certify (wrong with probability <= 0.2)"
    err = capsys.readouterr().err
    assert "futility=prediction 0.2): 0 certified, 0 not certifiable, 1 futile" in err and "no error bound" not in err
    power = ["--futility", "power", "--growth", "1.5", "--spending", "equal"]
    assert main(args + ["--delta", "0", "--eps", "0.1"] + power) == 0
    (row,) = list(csv.DictReader(out.open()))
    assert row["decision"] == "futile" and row["futility"] == "power 0.05" and row["n_used"] == "32"
    assert (row["growth"], row["spending"]) == ("1.5", "equal")
    assert row["reason"].startswith("futile:") and row["reason"].endswith("(no error bound)")
    err = capsys.readouterr().err
    assert "growth=1.5, spending=equal, futility=power 0.05): 0 certified" in err
    assert "'futile' is an estimate with no error bound" in err


def test_cli_delta_alone_runs_the_default_scheme(small_image, tmp_path, capsys):
    """--delta D alone: n0 32, growth 1.25, final spending, power futility 0.05 (bounds.DEFAULT_SCHEME,
    pinned here), and the summary's n is n_max; --futility proof is the scheme with proven stops."""
    assert bounds.DEFAULT_SCHEME == bounds.SequentialScheme(32, 1.25, "final", "power", 0.05)
    out = tmp_path / "r.csv"
    args = ["certify", str(small_image), "--n-max", "200", "--alpha", "0.1", "--seed", "0", "--quiet",
            "--out", str(out), "--device", "cpu", "--delta", "5"]
    assert main(args) == 0
    (row,) = list(csv.DictReader(out.open()))
    assert (row["n0"], row["growth"], row["spending"], row["futility"], row["n"]) == (
        "32", "1.25", "final", "power 0.05", "200")
    assert int(row["n_used"]) in bounds.look_sizes(32, 200, 1.25)
    err = capsys.readouterr().err
    assert "n_max=200, alpha=0.1" in err and "n=1000" not in err
    assert "n0=32, n_max=200, growth=1.25, spending=final, futility=power 0.05)" in err
    assert main(args + ["--futility", "proof", "--overwrite"]) == 0
    (row,) = list(csv.DictReader(out.open()))
    assert (row["n0"], row["growth"], row["spending"], row["futility"]) == ("32", "1.25", "final", "proof")
    assert row["decision"] in ("certified", "not certifiable", "undecided")
    assert "no error bound" not in capsys.readouterr().err
    assert main(args + ["--futility-error", "0.02", "--overwrite"]) == 0  # the default test takes its threshold
    (row,) = list(csv.DictReader(out.open()))
    assert row["futility"] == "power 0.02"


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--n-max", "64"], "--n-max, --n0, --growth, --spending, --futility and --futility-error need --delta"),
        (["--n0", "16"], "--n-max, --n0, --growth, --spending, --futility and --futility-error need --delta"),
        (["--growth", "1.5"], "need --delta"),
        (["--spending", "final"], "need --delta"),
        (["--delta", "1", "--growth", "1"], "growth .* must be a finite number > 1, got 1.0"),
        (["--futility", "prediction"], "need --delta"),
        (["--delta", "1", "--futility", "proof", "--futility-error", "0.1"],
         "--futility-error needs --futility prediction or power"),
        (["--delta", "1", "--futility", "prediction", "--futility-error", "1.5"], "futility_error must lie strictly between 0 and 1"),
        (["--delta", "-1"], "--delta must be a finite number >= 0, got -1.0"),
        (["--delta", "1", "--n0", "4"], "n0=4 samples cannot certify"),
        (["--delta", "1", "--n0", "256", "--n-max", "128"], "n0 must be <= n_max"),
    ],
)
def test_cli_sequential_option_errors(small_image, extra, match, capsys):
    with pytest.raises(SystemExit, match=match):
        main(["certify", str(small_image), "--quiet"] + extra)


def test_look_certifies_by_exact_comparison():
    """1.0 + (the float below 0.25) rounds to 1.25 in float64; an upper bound of 1.25 is
    then farther than delta from the median 1.0 and must not certify."""
    look = bounds.sequential_looks(64, 64, 0.25, 0.0, 0.1)[0]
    assert (look.k_lower, look.k_upper) == (25, 40)
    row = np.array([[0.75] * 25 + [1.0] * 14 + [1.25] * 25])  # bounds 0.75 and 1.25 around the median 1.0
    assert bounds.look_decisions(row, look, 0.25).decision.tolist() == [bounds.CERTIFIED]
    assert bounds.look_decisions(row, look, math.nextafter(0.25, 0.0)).decision.tolist() != [bounds.CERTIFIED]


def test_cli_sequential_resume_refuses_another_futility_test_or_schedule(small_image, tmp_path):
    out = tmp_path / "r.csv"
    args = ["certify", str(small_image), "--n", "128", "--n0", "32", "--alpha", "0.1", "--seed", "0", "--quiet",
            "--out", str(out), "--device", "cpu", "--delta", "0", "--eps", "0.1"]
    assert main(args) == 0
    with pytest.raises(SystemExit, match="futility") as refused:
        main(args + ["--futility", "prediction", "--resume"])
    assert "prediction 0.05" in str(refused.value) and "power 0.05" in str(refused.value)
    assert main(args + ["--resume"]) == 0  # the same settings resume
    for other in (["--growth", "1.5"], ["--spending", "equal"]):
        with pytest.raises(SystemExit, match="growth|spending"):
            main(args + other + ["--resume"])
