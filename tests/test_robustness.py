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
