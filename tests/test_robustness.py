"""Robustness scores against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from certiqa import robustness as rb

CLEAN = [10.0, 50.0, 90.0, 30.0]
ATTACKED = [12.0, 45.0, 90.0, 31.0]
RANGE = (0.0, 100.0)


def test_changes_and_rmse_by_hand():
    assert rb.absolute_change(CLEAN, ATTACKED).tolist() == [2.0, 5.0, 0.0, 1.0]
    assert rb.relative_change(torch.tensor(CLEAN), np.array(ATTACKED), RANGE).tolist() == pytest.approx([0.02, 0.05, 0, 0.01])
    assert rb.score_rmse(CLEAN, ATTACKED) == pytest.approx(math.sqrt((4 + 25 + 0 + 1) / 4))


def test_robustness_score_by_hand():
    # room: max(100 - f, f - 0) = 90, 50, 90, 70; changes 2, 5, floored 1e-6, 1
    expected = (math.log10(45) + math.log10(10) + math.log10(90 / 1e-6) + math.log10(70)) / 4
    assert rb.robustness_score(CLEAN, ATTACKED, RANGE) == pytest.approx(expected)
    assert rb.robustness_score([50.0], [60.0], RANGE, min_change=1e-3) == pytest.approx(math.log10(5))
    # a larger change means a less robust model
    assert rb.robustness_score(CLEAN, [c + 20 for c in CLEAN], RANGE) < rb.robustness_score(CLEAN, ATTACKED, RANGE)


def test_correlations_match_scipy_and_report():
    human = [0.9, 0.4, 0.1, 0.7]
    out = rb.attacked_correlations(CLEAN, ATTACKED, human)
    assert out["srocc_clean"] == pytest.approx(stats.spearmanr(ATTACKED, CLEAN).statistic)
    assert out["plcc_clean"] == pytest.approx(stats.pearsonr(ATTACKED, CLEAN).statistic)
    assert out["krocc_human"] == pytest.approx(stats.kendalltau(ATTACKED, human).statistic)
    assert set(out) == {f"{m}_{t}" for m in ("srocc", "plcc", "krocc") for t in ("clean", "human")}
    report = rb.robustness_report(CLEAN, ATTACKED, RANGE, human=human)
    assert report["abs_change"] == pytest.approx(2.0) and report["rel_change"] == pytest.approx(0.02)
    assert "srocc_human" in report
    assert "srocc_clean" not in rb.robustness_report([1.0, 2.0], [1.5, 2.5], RANGE)


def test_errors():
    with pytest.raises(ValueError, match="same length"):
        rb.absolute_change([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="non-finite"):
        rb.score_rmse([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="1-D"):
        rb.absolute_change([[1.0, 2.0]], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="empty"):
        rb.absolute_change([], [])
    with pytest.raises(ValueError, match="lo < hi"):
        rb.relative_change(CLEAN, ATTACKED, (5, 5))
    with pytest.raises(ValueError, match="pair"):
        rb.robustness_score(CLEAN, ATTACKED, 100)
    with pytest.raises(ValueError, match="min_change"):
        rb.robustness_score(CLEAN, ATTACKED, RANGE, min_change=0)


def test_tightness_ratio_closed_form():
    from certiqa.tightness import tightness_ratio

    ratios = tightness_ratio([10.0, 10.0, 10.0, 10.0, 10.0], [12.0, 7.0, 10.0, 11.0, 9.0],
                             [6.0, 6.0, 10.0, 10.0, -np.inf], [14.0, 14.0, 10.0, 10.0, np.inf])
    np.testing.assert_array_equal(ratios, [0.5, 0.75, 0.0, np.inf, 0.0])
    with pytest.raises(ValueError, match="equal lengths"):
        tightness_ratio([1.0], [1.0, 2.0], [0.0], [2.0])
    with pytest.raises(ValueError, match="NaN"):
        tightness_ratio([np.nan], [1.0], [0.0], [2.0])


def test_probe_certificate_on_a_linear_model_nearly_reaches_both_bounds():
    """f = w.z: the certified half-width at eps is about eps |w| + the order-statistic
    margin, and the attack moves the median by eps |w| exactly along w."""
    import torch

    from certiqa import SmoothedIQA
    from certiqa.tightness import probe_certificate

    w = torch.randn(48, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = lambda z: z.flatten(1) @ w  # noqa: E731
    x = torch.full((1, 3, 4, 4), 0.5, dtype=torch.float64)
    smoothed = SmoothedIQA(model, 0.05, n=2000, alpha=0.01, seed=0, batch_size=500)
    result = probe_certificate(smoothed, x, 0.05, steps=5, samples=16)
    half = (result.upper - result.lower) / 2
    assert result.attacked_up - result.median == pytest.approx(0.05 * float(w.norm()), abs=0.05 * half)
    assert 0.8 < result.ratio_up <= 1.0 and 0.8 < result.ratio_down <= 1.0
    assert result.ratio == max(result.ratio_up, result.ratio_down)
    with pytest.raises(ValueError, match="one image"):
        probe_certificate(smoothed, x.expand(2, -1, -1, -1), 0.05)


def test_tightness_result_ratios_are_signed_per_attack_direction():
    from certiqa.tightness import TightnessResult

    r = TightnessResult(median=10.0, lower=6.0, upper=14.0, attacked_up=12.0, attacked_down=11.0)
    assert (r.ratio_up, r.ratio_down, r.ratio) == (0.5, -0.25, 0.5)
    assert TightnessResult(10.0, -np.inf, np.inf, 11.0, 9.0).ratio == 0.0
