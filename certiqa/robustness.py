"""Robustness scores of IQA models under attack: score changes, RMSE, the robustness
score R of Zhang et al. and correlations of attacked scores with clean and human scores.

Every function takes 1-D score sequences (tensors, arrays or lists) of equal length,
one score per image, clean ``f(x)`` and attacked ``f(x')`` on the model's own scale.
Correlations reuse :mod:`certiqa.metrics`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import metrics

__all__ = [
    "absolute_change",
    "relative_change",
    "score_rmse",
    "robustness_score",
    "attacked_correlations",
    "robustness_report",
]


def _vector(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one score per image), got shape {np.shape(value)}.")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; pass one score per image.")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} has non-finite scores; drop or fix those images first.")
    return arr


def _pair(clean: Any, attacked: Any) -> tuple[np.ndarray, np.ndarray]:
    c, a = _vector("clean", clean), _vector("attacked", attacked)
    if c.shape != a.shape:
        raise ValueError(f"clean and attacked must have the same length, got {c.size} and {a.size}.")
    return c, a


def _range(score_range: Any) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in score_range)
    except (TypeError, ValueError):
        raise ValueError(f"score_range must be a pair (lo, hi) of numbers, got {score_range!r}.") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"score_range must satisfy lo < hi (finite), got {score_range!r}.")
    return lo, hi


def absolute_change(clean: Any, attacked: Any) -> np.ndarray:
    """|f(x') - f(x)| per image, shape (N,)."""
    c, a = _pair(clean, attacked)
    return np.abs(a - c)


def relative_change(clean: Any, attacked: Any, score_range: tuple[float, float]) -> np.ndarray:
    """|f(x') - f(x)| / (hi - lo) per image: the change as a fraction of the score scale.

    Normalising by the scale rather than by |f(x)| keeps it finite for scores near 0
    (DMOS of pristine images) and comparable across models with the same scale."""
    lo, hi = _range(score_range)
    return absolute_change(clean, attacked) / (hi - lo)


def score_rmse(clean: Any, attacked: Any) -> float:
    """sqrt(mean((f(x') - f(x))^2)) over images (raw scores, no mapping)."""
    c, a = _pair(clean, attacked)
    return float(np.sqrt(np.mean((a - c) ** 2)))


def robustness_score(
    clean: Any, attacked: Any, score_range: tuple[float, float], *, min_change: float = 1e-6
) -> float:
    """Robustness score R of Zhang et al. (2022), higher is more robust:

        R = mean_i log10( max(hi - f(x_i), f(x_i) - lo) / |f(x_i) - f(x_i')| ),

    with (lo, hi) = ``score_range`` (beta2, beta1). An unchanged score would give
    +inf; |f(x) - f(x')| is floored at ``min_change`` so R stays finite.
    """
    lo, hi = _range(score_range)
    if not (isinstance(min_change, (int, float)) and min_change > 0):
        raise ValueError(f"min_change must be a number > 0, got {min_change!r}.")
    c, a = _pair(clean, attacked)
    room = np.maximum(hi - c, c - lo)  # >= (hi - lo) / 2 > 0
    return float(np.mean(np.log10(room / np.maximum(np.abs(c - a), min_change))))


def attacked_correlations(
    clean: Any, attacked: Any, human: Any | None = None, *, mapping: metrics.Mapping = "none"
) -> dict[str, float]:
    """SROCC / PLCC / KROCC of attacked scores against clean scores (``*_clean``) and,
    when given, against human scores (``*_human``). Needs >= 3 images. PLCC is raw by
    default (attacked and clean scores share a scale); pass ``mapping="logistic5"``
    for the usual fit against human scores on larger sets."""
    c, a = _pair(clean, attacked)
    out = {
        "srocc_clean": metrics.srocc(a, c),
        "plcc_clean": metrics.plcc(a, c, mapping=mapping),
        "krocc_clean": metrics.krocc(a, c),
    }
    if human is not None:
        h = _vector("human", human)
        out.update(
            srocc_human=metrics.srocc(a, h), plcc_human=metrics.plcc(a, h, mapping=mapping), krocc_human=metrics.krocc(a, h)
        )
    return out


def robustness_report(
    clean: Any, attacked: Any, score_range: tuple[float, float], *, human: Any | None = None
) -> dict[str, float]:
    """All the scores above in one dict: mean absolute and relative change, RMSE, R,
    and the correlations when there are >= 3 images."""
    abs_change = absolute_change(clean, attacked)
    report = {
        "abs_change": float(abs_change.mean()),
        "rel_change": float(relative_change(clean, attacked, score_range).mean()),
        "rmse": score_rmse(clean, attacked),
        "R": robustness_score(clean, attacked, score_range),
    }
    if abs_change.size >= 3:
        try:
            report.update(attacked_correlations(clean, attacked, human))
        except ValueError:  # constant scores: correlations undefined, the rest still holds
            pass
    return report
