"""IQA correlation metrics: SROCC, KROCC, PLCC (after the standard logistic mapping) and RMSE.

Each accepts 1-D tensors, arrays or sequences of equal length >= 3 and returns a
Python float. Ties are handled as scipy does (average ranks; Kendall tau-b).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Hashable, Literal, Sequence

import numpy as np
from scipy import optimize, stats

from ._checks import check_int

__all__ = [
    "srocc", "krocc", "plcc", "rmse", "grouped_srocc", "paired_difference", "logistic_fit", "logistic4", "logistic5",
]

Mapping = Literal["logistic5", "logistic4", "none"]


def _pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for name, value in (("pred", pred), ("target", target)):
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim != 1:
            arr = arr.squeeze()
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one score per image), got shape {np.shape(value)}.")
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} has non-finite values; drop or fix those images first.")
        arrays.append(arr)
    pred_a, target_a = arrays
    if pred_a.shape != target_a.shape:
        raise ValueError(f"pred and target must have the same length, got {pred_a.shape[0]} and {target_a.shape[0]}.")
    if pred_a.shape[0] < 3:
        raise ValueError(f"correlations need at least 3 pairs, got {pred_a.shape[0]}.")
    for name, arr in (("pred", pred_a), ("target", target_a)):
        if np.ptp(arr) == 0:
            raise ValueError(f"{name} is constant ({arr[0]}); a correlation is undefined.")
    return pred_a, target_a


def srocc(pred: Any, target: Any) -> float:
    """Spearman rank-order correlation coefficient."""
    p, t = _pair(pred, target)
    return float(stats.spearmanr(p, t).statistic)


def krocc(pred: Any, target: Any) -> float:
    """Kendall rank-order correlation coefficient (tau-b, which accounts for ties)."""
    p, t = _pair(pred, target)
    return float(stats.kendalltau(p, t).statistic)


def logistic5(x: np.ndarray, b1: float, b2: float, b3: float, b4: float, b5: float) -> np.ndarray:
    """VQEG 5-parameter mapping: b1 (1/2 - 1/(1 + exp(b2 (x - b3)))) + b4 x + b5."""
    return b1 * (0.5 - 1.0 / (1.0 + np.exp(np.clip(b2 * (x - b3), -60, 60)))) + b4 * x + b5


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """4-parameter mapping: (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2."""
    return (b1 - b2) / (1.0 + np.exp(np.clip(-(x - b3) / (abs(b4) + 1e-12), -60, 60))) + b2


def logistic_fit(pred: Any, target: Any, mapping: Mapping = "logistic5") -> np.ndarray:
    """Map predictions onto the target scale with a monotonic logistic fit.

    Falls back to the least-squares linear fit when there are fewer pairs than
    parameters, when the optimiser fails, or when its fit has a larger squared
    error than the linear one (so PLCC after mapping is never below |raw PLCC|)."""
    p, t = _pair(pred, target)
    return _fit(p, t, mapping)[0]


def _fit(p: np.ndarray, t: np.ndarray, mapping: Mapping) -> tuple[np.ndarray, bool]:
    """(mapped predictions, whether the mapping is affine in p); see :func:`logistic_fit`."""
    if mapping == "none":
        return p, True
    if mapping not in ("logistic5", "logistic4"):
        raise ValueError(f"mapping must be 'logistic5', 'logistic4' or 'none', got {mapping!r}.")
    slope, intercept = np.polyfit(p, t, 1)
    linear = slope * p + intercept
    if p.size < (5 if mapping == "logistic5" else 4):
        return linear, True
    scale = np.std(p) or 1.0
    sign = 1.0 if stats.pearsonr(p, t).statistic >= 0 else -1.0
    if mapping == "logistic5":
        func, init = logistic5, [sign * np.ptp(t), 1.0 / scale, np.mean(p), 0.0, np.mean(t)]
    else:
        func, init = logistic4, [t.max(), t.min(), np.mean(p), sign * scale]
        if sign < 0:
            init[0], init[1] = t.min(), t.max()
            init[3] = scale
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = optimize.curve_fit(func, p, t, p0=init, maxfev=20000)
        fitted = func(p, *params)
        if np.isfinite(fitted).all() and np.ptp(fitted) > 0 and np.sum((fitted - t) ** 2) <= np.sum((linear - t) ** 2):
            return fitted, False
    except (RuntimeError, optimize.OptimizeWarning, ValueError):
        pass
    return linear, True


def plcc(pred: Any, target: Any, mapping: Mapping = "logistic5") -> float:
    """Pearson linear correlation after a monotonic logistic mapping (``mapping='none'``: raw).

    When the mapping falls back to the linear fit, the result is |raw PLCC|
    exactly (computed from pred, as the fitted line can be numerically flat)."""
    p, t = _pair(pred, target)
    mapped, affine = _fit(p, t, mapping)
    r = float(stats.pearsonr(p if affine else mapped, t).statistic)
    return abs(r) if affine and mapping != "none" else r


def rmse(pred: Any, target: Any, mapping: Mapping = "none") -> float:
    """Root-mean-square error, raw by default or after a logistic mapping."""
    p, t = _pair(pred, target)
    return float(np.sqrt(np.mean((_fit(p, t, mapping)[0] - t) ** 2)))


def grouped_srocc(pred: Any, target: Any, groups: Sequence[Hashable]) -> tuple[float, int]:
    """Mean SROCC within each group (e.g. one reference x distortion ladder) of >= 3 images
    whose predictions and targets are not constant; returns (mean, groups used), (nan, 0)
    when no group qualifies."""
    pred_a, target_a = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if not len(pred_a) == len(target_a) == len(groups):
        raise ValueError(f"pred, target and groups must have one entry per image, got "
                         f"{len(pred_a)}, {len(target_a)} and {len(groups)}.")
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    values = [
        srocc(pred_a[idx], target_a[idx])
        for idx in members.values()
        if len(idx) >= 3 and np.ptp(pred_a[idx]) > 0 and np.ptp(target_a[idx]) > 0
    ]
    return (float(np.mean(values)), len(values)) if values else (float("nan"), 0)



def paired_difference(
    metric: Callable[[Any, Any], float],
    pred_a: Any,
    pred_b: Any,
    target: Any,
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``metric(pred_a, target) - metric(pred_b, target)`` and its paired bootstrap interval.

    Each resample draws the images with replacement, the same draw for both predictors;
    the interval is the percentile interval of the resampled differences, with ``level``
    coverage. Resamples where a series is constant (the metric is undefined) are
    dropped; more than 10 % of them is an error. Returns (difference, low, high). An
    interval that excludes 0 says the order of the two predictors is unlikely to be an
    accident of which images were measured.
    """
    a, t = _pair(pred_a, target)
    b, _ = _pair(pred_b, target)
    resamples = check_int("resamples", resamples, minimum=100)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}.")
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        idx = rng.integers(0, len(t), len(t))
        if np.ptp(a[idx]) > 0 and np.ptp(b[idx]) > 0 and np.ptp(t[idx]) > 0:
            diffs.append(metric(a[idx], t[idx]) - metric(b[idx], t[idx]))
    if len(diffs) < 0.9 * resamples:
        raise ValueError(
            f"{resamples - len(diffs)} of {resamples} resamples had a constant series; {len(t)} images are "
            "too few (or too tied) for a bootstrap interval."
        )
    low, high = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return metric(a, t) - metric(b, t), float(low), float(high)
