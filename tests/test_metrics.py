"""certiqa.metrics against scipy (hypothesis), hand-computed cases, the logistic
mapping's guarantees and every input error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import stats

from certiqa.metrics import krocc, logistic_fit, plcc, rmse, srocc

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=64)


@st.composite
def pairs(draw, min_size=3, max_size=40):
    n = draw(st.integers(min_size, max_size))
    p = np.array(draw(st.lists(finite, min_size=n, max_size=n)))
    t = np.array(draw(st.lists(finite, min_size=n, max_size=n)))
    assume(np.ptp(p) > 1e-6 and np.ptp(t) > 1e-6)
    return p, t


@settings(max_examples=80, deadline=None)
@given(pairs())
def test_against_scipy(pt):
    p, t = pt
    assert srocc(p, t) == pytest.approx(stats.spearmanr(p, t).statistic, abs=1e-12)
    assert krocc(p, t) == pytest.approx(stats.kendalltau(p, t).statistic, abs=1e-12)
    assert plcc(p, t, mapping="none") == pytest.approx(stats.pearsonr(p, t).statistic, abs=1e-9)
    assert rmse(p, t) == pytest.approx(math.sqrt(float(np.mean((p - t) ** 2))), rel=1e-12)
    # tensors, lists and (N, 1) columns give the same numbers
    assert srocc(torch.from_numpy(p), list(t)) == srocc(p, t)
    assert krocc(p[:, None], t) == krocc(p, t)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-1000, 1000), finite), min_size=3, max_size=40), st.floats(0.1, 10),
       st.floats(-5, 5))  # fmt: skip
def test_rank_metrics_invariant_to_monotone_maps(rows, a, b):
    p, t = (np.array(c, dtype=np.float64) for c in zip(*rows))
    assume(np.ptp(p) > 0 and np.ptp(t) > 0)
    q = a * (p + p * np.abs(p) / 1e3) + b  # strictly increasing and nonlinear; integer p keeps ties exact
    assert srocc(q, t) == pytest.approx(srocc(p, t), abs=1e-12)
    assert krocc(q, t) == pytest.approx(krocc(p, t), abs=1e-12)
    assert srocc(-p, t) == pytest.approx(-srocc(p, t), abs=1e-12)


def test_hand_computed_monotone_and_reversed():
    x = np.arange(1.0, 8.0)
    assert srocc(x, np.exp(x)) == 1.0 and krocc(x, x**3) == 1.0
    assert srocc(x, x[::-1]) == -1.0 and krocc(x, -np.log(x)) == -1.0


def test_hand_computed_ties():
    # pred ranks (average): 1, 2.5, 2.5, 4; target ranks 1, 2, 3, 4
    # Spearman = Pearson of ranks = 4.5 / sqrt(4.5 * 5) = sqrt(0.9)
    pred, target = [1.0, 2.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0]
    assert srocc(pred, target) == pytest.approx(math.sqrt(0.9), abs=1e-12)
    # tau-b: 5 concordant, 0 discordant, 1 tie in pred, 6 pairs: 5 / sqrt((6 - 1) * 6)
    assert krocc(pred, target) == pytest.approx(5 / math.sqrt(30), abs=1e-12)


def test_hand_computed_plcc_and_rmse():
    # deviations (-1, 0, 1) and (-4/3, -1/3, 5/3): cov 3, variances 2 and 14/3
    assert plcc([1, 2, 3], [1, 2, 4], mapping="none") == pytest.approx(3 / math.sqrt(2 * 14 / 3), abs=1e-12)
    assert rmse([1, 2, 3], [2, 2, 5]) == pytest.approx(math.sqrt(5 / 3), abs=1e-12)


@pytest.mark.parametrize("mapping", ["logistic5", "logistic4"])
def test_logistic_mapping_recovers_sigmoid(mapping):
    x = np.linspace(-3, 3, 60)
    y = 100 / (1 + np.exp(-2 * x)) + 5
    assert plcc(x, y, mapping="none") < 0.97
    assert plcc(x, y, mapping=mapping) > 0.9999
    assert rmse(x, y, mapping=mapping) < 0.5 < rmse(x, y)
    # a decreasing relation (a DMOS-like target) is fitted as well
    assert plcc(x, -y, mapping=mapping) > 0.9999


@settings(max_examples=60, deadline=None)
@given(st.integers(5, 60), st.floats(0.1, 20), st.floats(-3, 3), st.integers(0, 2**31), st.booleans(),
       st.sampled_from(["logistic5", "logistic4"]))  # fmt: skip
def test_logistic_plcc_at_least_raw(n, steep, shift, seed, noisy, mapping):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-3, 3, n))
    y = np.tanh(steep * (x - shift)) + x / 10
    if noisy:
        y = y + rng.normal(0, 0.1, n)
    assume(np.ptp(x) > 1e-6 and np.ptp(y) > 1e-6)
    raw = plcc(x, y, mapping="none")
    assert plcc(x, y, mapping=mapping) >= abs(raw) - 1e-9
    # the residual of the mapping against that of the least-squares line through (x, y)
    assert rmse(x, y, mapping=mapping) <= rmse(np.polyval(np.polyfit(x, y, 1), x), y) + 1e-9


def test_logistic_fit_none_is_identity():
    p = np.array([3.0, 1.0, 2.0])
    np.testing.assert_array_equal(logistic_fit(p, [1, 2, 3], mapping="none"), p)


@pytest.mark.parametrize("fn", [srocc, krocc, plcc, rmse])
def test_errors(fn):
    with pytest.raises(ValueError, match="at least 3 pairs, got 2"):
        fn([1.0, 2.0], [1.0, 3.0])
    with pytest.raises(ValueError, match="pred is constant"):
        fn([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="target is constant"):
        fn([1.0, 2.0, 3.0], [4.0, 4.0, 4.0])
    with pytest.raises(ValueError, match="same length, got 3 and 4"):
        fn([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match="pred has non-finite"):
        fn([1.0, np.nan, 3.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="target has non-finite"):
        fn(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, float("inf"), 3.0]))
    with pytest.raises(ValueError, match="must be 1-D"):
        fn(np.ones((3, 2)), np.arange(6.0))


@pytest.mark.parametrize("fn", [plcc, rmse, logistic_fit])
def test_unknown_mapping(fn):
    with pytest.raises(ValueError, match="mapping must be"):
        fn([1.0, 2.0, 3.0], [1.0, 2.0, 4.0], mapping="cubic")


@pytest.mark.parametrize("mapping", ["logistic5", "logistic4"])
def test_logistic_mappings_on_fewer_pairs_than_parameters(mapping):
    # 3 pairs (the documented minimum) cannot fit 4 or 5 parameters: the linear
    # least-squares fit is used. Deviations (-1, 0, 1) and (4/3, 1/3, -5/3):
    # |r| = 3 / sqrt(2 * 14/3); residuals of the line (1/6, -1/3, 1/6): rmse sqrt(1/18).
    assert plcc([1, 2, 3], [3, 2, 0], mapping=mapping) == pytest.approx(3 / math.sqrt(28 / 3), abs=1e-12)
    assert rmse([1, 2, 3], [3, 2, 0], mapping=mapping) == pytest.approx(math.sqrt(1 / 18), abs=1e-12)
    assert 0.8 - 1e-12 <= plcc([1, 2, 3, 4], [1, 2, 4, 3], mapping=mapping) <= 1


def test_uncorrelated_pairs_give_zero_plcc():
    # exactly zero covariance: the fitted line is flat and PLCC is 0, not noise
    assert plcc([1, 2, 3], [1, 0, 1], mapping="logistic5") == pytest.approx(0, abs=1e-12)


def test_grouped_srocc_hand_values_and_errors():
    from certiqa.metrics import grouped_srocc

    # group a perfectly ordered (+1), group b reversed (-1), group c too small, group d constant target
    mean, used = grouped_srocc([1, 2, 3, 3, 2, 1, 5, 1, 2, 3], [1, 2, 3, 1, 2, 3, 0, 4, 4, 4],
                               ["a", "a", "a", "b", "b", "b", "c", "d", "d", "d"])
    assert (mean, used) == (0.0, 2)
    nan, none = grouped_srocc([1, 2], [2, 1], ["a", "a"])
    assert none == 0 and nan != nan
    with pytest.raises(ValueError, match="one entry per image"):
        grouped_srocc([1, 2, 3], [1, 2, 3], ["a", "a"])


def _three_series(size: int = 60, seed: int = 0):
    r = np.random.default_rng(seed)
    t = r.normal(size=size)
    return t + 0.5 * r.normal(size=size), t + 2.0 * r.normal(size=size), t


def test_paired_difference_matches_scipy_bootstrap():
    from certiqa.metrics import paired_difference

    a, b, t = _three_series()
    diff, low, high = paired_difference(srocc, a, b, t, resamples=4000, seed=1)
    assert diff == pytest.approx(srocc(a, t) - srocc(b, t), abs=1e-12)
    ref = stats.bootstrap(
        (a, b, t), lambda x, y, z: stats.spearmanr(x, z).statistic - stats.spearmanr(y, z).statistic,
        paired=True, vectorized=False, n_resamples=4000, method="percentile",
        random_state=np.random.default_rng(2),
    ).confidence_interval
    assert low == pytest.approx(ref.low, abs=0.03) and high == pytest.approx(ref.high, abs=0.03)
    assert 0 < low < diff < high


def test_paired_difference_symmetry_and_identity():
    from certiqa.metrics import paired_difference

    a, b, t = _three_series(seed=3)
    d, lo, hi = paired_difference(srocc, a, b, t, resamples=500, seed=4)
    d2, lo2, hi2 = paired_difference(srocc, b, a, t, resamples=500, seed=4)
    assert (d2, lo2, hi2) == pytest.approx((-d, -hi, -lo), abs=1e-12)
    assert paired_difference(srocc, a, a, t, resamples=200) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"resamples": 99}, "resamples must be"), ({"resamples": True}, "resamples must be"),
     ({"level": 1.0}, "level must lie"), ({"level": 0.0}, "level must lie")],
)
def test_paired_difference_errors(kwargs, match):
    from certiqa.metrics import paired_difference

    a, b, t = _three_series()
    with pytest.raises(ValueError, match=match):
        paired_difference(srocc, a, b, t, **kwargs)


def test_paired_difference_refuses_too_few_images():
    from certiqa.metrics import paired_difference

    with pytest.raises(ValueError, match="too few"):
        paired_difference(srocc, [1.0, 2.0, 3.0], [3.0, 1.0, 2.0], [1.0, 2.0, 4.0], resamples=200)
