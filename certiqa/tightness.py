"""How tight are the certificates? Attack the smoothed median towards each certified bound.

For an image x with certified interval [lower, upper] around the reported median m at
radius eps, an adaptive attack (:class:`certiqa.attacks.SmoothedPGDL2`) looks for
||delta||_2 <= eps that moves the smoothed median up, and another that moves it down.
The *tightness ratio* of a side is the fraction of that side's half-width the attack
achieves: (m_up - m) / (upper - m) and (m - m_down) / (m - lower), m_up / m_down the
smoothed medians of the attacked images estimated from fresh noise. A ratio near 1
means the bound is nearly reached (a tight certificate and a strong attack); near 0,
a loose certificate or a weak attack. Above 1 would contradict the certificate up to
the sampling error of the medians.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ._checks import check_nonnegative
from .attacks import SmoothedPGDL2
from .smoothing import SmoothedIQA

__all__ = ["tightness_ratio", "TightnessResult", "probe_certificate"]


def tightness_ratio(median: Any, attacked: Any, lower: Any, upper: Any) -> np.ndarray:
    """Per image, the achieved fraction of the certified half-width on the side moved to.

    ``(attacked - median) / (upper - median)`` where ``attacked >= median``, else
    ``(median - attacked) / (median - lower)``; all arguments are 1-D of one length.
    A zero half-width gives 0 when the attack did not move the median, inf when it did;
    a side with an infinite bound (not certified) gives 0.
    """
    m, a, lo, hi = (np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=np.float64)
                    for v in (median, attacked, lower, upper))
    if not (m.ndim == 1 and m.shape == a.shape == lo.shape == hi.shape and m.size):
        raise ValueError(
            "median, attacked, lower and upper must be 1-D with one value per image and equal lengths, got "
            f"shapes {m.shape}, {a.shape}, {lo.shape}, {hi.shape}."
        )
    if np.isnan(np.stack([m, a, lo, hi])).any():
        raise ValueError("tightness_ratio got NaN values; pass finite medians and bounds (+-inf for uncertified sides).")
    moved = np.abs(a - m)
    half = np.where(a >= m, hi - m, m - lo)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(half > 0, moved / half, np.where(moved > 0, np.inf, 0.0))


@dataclass(frozen=True)
class TightnessResult:
    """One image's certificate and the best attack on each side (float scores)."""

    median: float
    lower: float
    upper: float
    attacked_up: float
    attacked_down: float

    @property
    def ratio_up(self) -> float:
        """(attacked_up - median) / (upper - median): negative when the up attack moved it down."""
        return _signed_ratio(self.attacked_up - self.median, self.upper - self.median)

    @property
    def ratio_down(self) -> float:
        """(median - attacked_down) / (median - lower): negative when the down attack moved it up."""
        return _signed_ratio(self.median - self.attacked_down, self.median - self.lower)

    @property
    def ratio(self) -> float:
        """The larger of the two sides' ratios: how close the best attack came to a bound."""
        return max(self.ratio_up, self.ratio_down)


def _signed_ratio(progress: float, half: float) -> float:
    if half == float("inf"):
        return 0.0
    if half > 0:
        return progress / half
    return 0.0 if progress == 0 else float("inf") if progress > 0 else float("-inf")


def probe_certificate(
    smoothed: SmoothedIQA,
    x: torch.Tensor,
    eps: float,
    *,
    strong: bool = False,
    checker: SmoothedIQA | None = None,
    seed: int = 0,
    **attack_options: Any,
) -> TightnessResult:
    """Certify one image (1, C, H, W) at ``eps`` and attack its smoothed median both ways.

    The certificate uses ``smoothed`` (its n, alpha and seed); the attacked medians are
    estimated by ``checker`` (default: ``smoothed`` with seed + 1, fresh noise). The
    attack is :class:`~certiqa.attacks.SmoothedPGDL2` (``strong=True``: its
    :meth:`~certiqa.attacks.SmoothedPGDL2.strong` setting) with ``attack_options``.
    """
    eps = check_nonnegative("eps", eps)
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"probe_certificate takes one image of shape (1, C, H, W), got {tuple(x.shape)}.")
    if checker is None:
        checker = SmoothedIQA(smoothed.model, smoothed.sigma, n=smoothed.n, alpha=smoothed.alpha,
                              batch_size=smoothed.batch_size, clip=smoothed.clip, denoiser=smoothed.denoiser,
                              seed=None if smoothed.seed is None else smoothed.seed + 1, precision=smoothed.precision)
    cert = smoothed.certify(x, eps)
    make = SmoothedPGDL2.strong if strong else SmoothedPGDL2
    moved = {}
    for direction in ("up", "down"):
        attack = make(smoothed, eps, direction=direction, seed=seed, **attack_options)
        moved[direction] = float(checker.predict(attack(x))[0])
    return TightnessResult(float(cert.median[0]), float(cert.lower[0]), float(cert.upper[0]), moved["up"], moved["down"])
