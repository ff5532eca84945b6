"""Input guards shared by the library. Each message says what was expected, what
came, and how to fix it."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

__all__ = [
    "check_images",
    "check_scores",
    "check_positive",
    "check_nonnegative",
    "check_int",
    "check_open_unit",
]


def check_images(x: Any, name: str = "x", *, unit_range: bool = True) -> torch.Tensor:
    """Check an image batch of shape (B, C, H, W), floating, finite, in [0, 1]."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}. "
            "Load images with certiqa.io.load_image and stack them."
        )
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating tensor with values in [0, 1], got dtype {x.dtype}. "
            "Convert 8-bit images with x.float() / 255."
        )
    if x.ndim != 4:
        raise ValueError(
            f"{name} must have shape (B, C, H, W), got {x.ndim} dimensions {tuple(x.shape)}. "
            "Add a batch dimension with x.unsqueeze(0)."
        )
    if x.numel() == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}.")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} has {bad} non-finite pixel value(s) (NaN or inf); pixels must be finite.")
    if unit_range:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{name} must have pixels in [0, 1], got values in [{lo:.4g}, {hi:.4g}]. "
                "Divide 8-bit images by 255 and do not normalise them before certiqa."
            )
    return x


def check_scores(
    scores: Any, batch: int, *, finite: bool = True, first_index: int = 0, where: str = "the model"
) -> torch.Tensor:
    """Check a model output of shape (batch,) or (batch, 1) and return it as (batch,).

    ``finite=False`` skips the NaN/inf check (it synchronises with the device);
    ``first_index`` maps rows back to image indices in error messages."""
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"{where} must return a torch.Tensor of scores, got {type(scores).__name__}.")
    if scores.shape not in ((batch,), (batch, 1)):
        raise ValueError(
            f"{where} must map (B, C, H, W) images to scores of shape (B,) or (B, 1); "
            f"for B = {batch} it returned shape {tuple(scores.shape)}."
        )
    scores = scores.reshape(batch)
    if not finite:
        return scores
    ok = torch.isfinite(scores)
    if not ok.all():
        row = int((~ok).nonzero()[0])
        raise ValueError(
            f"{where} returned a non-finite score ({float(scores[row])}) for image index "
            f"{first_index + row}; check the model and that image."
        )
    return scores


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def check_positive(name: str, value: Any) -> float:
    if not _is_number(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    return float(value)


def check_nonnegative(name: str, value: Any) -> float:
    if not _is_number(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return float(value)


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_open_unit(name: str, value: Any) -> float:
    if not _is_number(value) or not 0 < value < 1:
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}.")
    return float(value)
