"""Graded synthetic distortions of RGB image batches.

Every distortion maps a batch ``x`` of shape (B, 3, H, W) with values in [0, 1]
to a batch of the same shape, dtype and device, clamped to [0, 1], at one of
``LEVELS`` severities (1 = mildest, 5 = strongest). The random ones (noise and
the direction of motion blur) draw only from the ``generator`` they are given,
so a seeded generator (or an integer seed) makes them reproducible.

Use :func:`distort` with a name from :data:`DISTORTIONS`, or call a function
directly::

    y = distort(x, "jpeg", 3)
    y = gaussian_noise(x, 5, generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import math
from typing import Callable

import kornia
import torch
import torch.nn.functional as F

from ._checks import check_images

__all__ = [
    "LEVELS",
    "DISTORTIONS",
    "PARAMETERS",
    "distort",
    "distort_with",
    "gaussian_blur",
    "motion_blur",
    "gaussian_noise",
    "jpeg",
    "contrast",
    "brightness",
    "saturation",
    "pixelate",
    "quantize",
]

LEVELS = (1, 2, 3, 4, 5)

# The parameter of each distortion at levels 1..5 (index level - 1).
PARAMETERS: dict[str, tuple[float, ...]] = {
    "gaussian_blur": (0.8, 1.5, 2.5, 3.5, 5.0),  # sigma in pixels
    "motion_blur": (5, 9, 13, 19, 27),  # kernel length in pixels (odd)
    "gaussian_noise": (0.02, 0.05, 0.08, 0.12, 0.18),  # noise std in [0, 1] units
    "jpeg": (60.0, 35.0, 20.0, 10.0, 4.0),  # JPEG quality
    "contrast": (0.75, 0.55, 0.4, 0.28, 0.18),  # contrast factor around the image mean
    "brightness": (0.08, 0.16, 0.24, 0.32, 0.4),  # darkening shift in [0, 1] units
    "saturation": (0.6, 0.4, 0.25, 0.1, 0.0),  # HSV saturation factor
    "pixelate": (2, 3, 4, 6, 8),  # down-sampling factor
    "quantize": (6, 5, 4, 3, 2),  # bits kept per channel
}


def _check_level(level: object) -> int:
    if isinstance(level, bool) or not isinstance(level, int) or level not in LEVELS:
        raise ValueError(f"level must be an integer in {LEVELS[0]}..{LEVELS[-1]} (1 = mildest), got {level!r}.")
    return level


def _check_rgb(x: object) -> torch.Tensor:
    x = check_images(x)
    if x.shape[1] != 3:
        raise ValueError(
            f"distortions expect RGB images of shape (B, 3, H, W), got {tuple(x.shape)}. "
            "Repeat a grayscale channel with x.expand(-1, 3, -1, -1)."
        )
    return x


def _param(name: str, level: int) -> float:
    return PARAMETERS[name][_check_level(level) - 1]


def _generator(generator: torch.Generator | int | None) -> torch.Generator | None:
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise TypeError(f"generator must be a torch.Generator, an integer seed or None, got {type(generator).__name__}.")


def _rand(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None, normal: bool) -> torch.Tensor:
    """Random numbers drawn on the generator's device (CPU by default), moved to ``like``."""
    device = generator.device if generator is not None else torch.device("cpu")
    draw = torch.randn if normal else torch.rand
    return draw(shape, generator=generator, device=device, dtype=torch.float32).to(like.device, like.dtype)


def _blur_with(x: torch.Tensor, sigma: float, generator: torch.Generator | None) -> torch.Tensor:
    k = 2 * math.ceil(3 * sigma) + 1
    sig = torch.tensor([[sigma, sigma]], dtype=x.dtype, device=x.device).expand(x.shape[0], 2)
    return kornia.filters.gaussian_blur2d(x, (k, k), sig, border_type="reflect")


def _motion_with(x: torch.Tensor, length: float, generator: torch.Generator | None) -> torch.Tensor:
    k = int(length)
    angle = _rand((x.shape[0],), x, generator, normal=False) * 180.0
    return kornia.filters.motion_blur(x, k, angle, torch.zeros_like(angle), border_type="reflect")


def _noise_with(x: torch.Tensor, std: float, generator: torch.Generator | None) -> torch.Tensor:
    return x + std * _rand(tuple(x.shape), x, generator, normal=True)


def _jpeg_with(x: torch.Tensor, quality: float, generator: torch.Generator | None) -> torch.Tensor:
    return kornia.enhance.jpeg_codec_differentiable(x, torch.tensor([quality], dtype=x.dtype, device=x.device))


def _contrast_with(x: torch.Tensor, factor: float, generator: torch.Generator | None) -> torch.Tensor:
    return kornia.enhance.adjust_contrast_with_mean_subtraction(x, factor)


def _brightness_with(x: torch.Tensor, shift: float, generator: torch.Generator | None) -> torch.Tensor:
    return kornia.enhance.adjust_brightness(x, -shift, clip_output=True)


def _saturation_with(x: torch.Tensor, factor: float, generator: torch.Generator | None) -> torch.Tensor:
    return kornia.enhance.adjust_saturation(x, factor)


def _pixelate_with(x: torch.Tensor, factor: float, generator: torch.Generator | None) -> torch.Tensor:
    factor = int(factor)
    height, width = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, math.ceil(height / factor)), max(1, math.ceil(width / factor))), mode="area")
    return F.interpolate(small, size=(height, width), mode="nearest")


def _quantize_with(x: torch.Tensor, bits: float, generator: torch.Generator | None) -> torch.Tensor:
    steps = 2 ** int(bits) - 1
    return torch.round(x * steps) / steps


# name -> (function of (x, parameter, generator), check of the parameter, what the parameter must be)
_WITH: dict[str, tuple[Callable[..., torch.Tensor], Callable[[float], bool], str]] = {
    "gaussian_blur": (_blur_with, lambda v: 0 < v <= 20, "a blur sigma in (0, 20] pixels"),
    "motion_blur": (_motion_with, lambda v: v == int(v) and v >= 3 and v % 2 == 1, "an odd kernel length >= 3"),
    "gaussian_noise": (_noise_with, lambda v: v >= 0, "a noise std >= 0"),
    "jpeg": (_jpeg_with, lambda v: 1 <= v <= 100, "a JPEG quality in [1, 100]"),
    "contrast": (_contrast_with, lambda v: 0 <= v <= 1, "a contrast factor in [0, 1]"),
    "brightness": (_brightness_with, lambda v: 0 <= v <= 1, "a darkening shift in [0, 1]"),
    "saturation": (_saturation_with, lambda v: 0 <= v <= 1, "a saturation factor in [0, 1]"),
    "pixelate": (_pixelate_with, lambda v: v == int(v) and v >= 1, "an integer down-sampling factor >= 1"),
    "quantize": (_quantize_with, lambda v: v == int(v) and 1 <= v <= 16, "an integer number of bits in 1..16"),
}


def distort_with(
    x: torch.Tensor, name: str, parameter: float, generator: torch.Generator | int | None = None
) -> torch.Tensor:
    """Apply the distortion ``name`` with its raw ``parameter`` (the unit of :data:`PARAMETERS`:
    blur sigma, motion length, noise std, JPEG quality, contrast factor, darkening shift,
    saturation factor, pixelation factor, bits), so severities between and beyond the five
    levels can be drawn. ``distort(x, name, level)`` equals
    ``distort_with(x, name, PARAMETERS[name][level - 1])``.

    Returns (B, 3, H, W) images in [0, 1], same dtype and device as ``x``."""
    if name not in _WITH:
        raise ValueError(f"unknown distortion {name!r}; choose one of {sorted(_WITH)}.")
    function, valid, what = _WITH[name]
    if isinstance(parameter, bool) or not isinstance(parameter, (int, float)) or not math.isfinite(parameter) \
            or not valid(float(parameter)):
        raise ValueError(f"the {name} parameter must be {what}, got {parameter!r}.")
    return function(_check_rgb(x), parameter, _generator(generator)).clamp(0.0, 1.0)


def gaussian_blur(x: torch.Tensor, level: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Isotropic Gaussian blur, sigma 0.8..5 px, kernel 2*ceil(3 sigma)+1, reflected borders."""
    return distort_with(x, "gaussian_blur", _param("gaussian_blur", level), generator)


def motion_blur(x: torch.Tensor, level: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Linear motion blur of length 5..27 px in a random direction per image (from ``generator``)."""
    return distort_with(x, "motion_blur", _param("motion_blur", level), generator)


def gaussian_noise(x: torch.Tensor, level: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Additive white Gaussian noise, std 0.02..0.18 (independent per pixel and channel), clamped."""
    return distort_with(x, "gaussian_noise", _param("gaussian_noise", level), generator)


def jpeg(x: torch.Tensor, level: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """JPEG compression (kornia's differentiable codec) at quality 60, 35, 20, 10, 4."""
    return distort_with(x, "jpeg", _param("jpeg", level), generator)


def contrast(x: torch.Tensor, level: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Contrast reduction towards the image's mean gray, factor 0.75..0.18."""
    return distort_with(x, "contrast", _param("contrast", level), generator)


def brightness(x: torch.Tensor, level: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Darkening by a uniform shift of 0.08..0.4, clamped at black."""
    return distort_with(x, "brightness", _param("brightness", level), generator)


def saturation(x: torch.Tensor, level: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Desaturation: HSV saturation scaled by 0.6..0 (level 5 is grayscale)."""
    return distort_with(x, "saturation", _param("saturation", level), generator)


def pixelate(x: torch.Tensor, level: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Area down-sampling by 2..8 followed by nearest-neighbour up-sampling to the input size."""
    return distort_with(x, "pixelate", _param("pixelate", level), generator)


def quantize(x: torch.Tensor, level: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Uniform quantisation of each channel to 2**bits gray levels, bits 6..2 (mid-rise, rounding)."""
    return distort_with(x, "quantize", _param("quantize", level), generator)


DISTORTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "gaussian_blur": gaussian_blur,
    "motion_blur": motion_blur,
    "gaussian_noise": gaussian_noise,
    "jpeg": jpeg,
    "contrast": contrast,
    "brightness": brightness,
    "saturation": saturation,
    "pixelate": pixelate,
    "quantize": quantize,
}


def distort(x: torch.Tensor, name: str, level: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Apply the distortion ``name`` (a key of :data:`DISTORTIONS`) at ``level`` in 1..5.

    Args:
        x: (B, 3, H, W) floating images in [0, 1].
        name: distortion name.
        level: severity, 1 (mildest) to 5 (strongest).
        generator: torch.Generator or integer seed for the random distortions; None
            uses torch's global generator.

    Returns:
        (B, 3, H, W) distorted images in [0, 1], same dtype and device as ``x``.
    """
    if name not in DISTORTIONS:
        raise ValueError(f"unknown distortion {name!r}; choose one of {sorted(DISTORTIONS)}.")
    return DISTORTIONS[name](x, level, generator)
