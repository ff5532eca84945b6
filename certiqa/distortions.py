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


def gaussian_blur(x: torch.Tensor, level: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Isotropic Gaussian blur, sigma 0.8..5 px, kernel 2*ceil(3 sigma)+1, reflected borders."""
    x = _check_rgb(x)
    sigma = _param("gaussian_blur", level)
    k = 2 * math.ceil(3 * sigma) + 1
    sig = torch.tensor([[sigma, sigma]], dtype=x.dtype, device=x.device).expand(x.shape[0], 2)
    return kornia.filters.gaussian_blur2d(x, (k, k), sig, border_type="reflect").clamp(0.0, 1.0)


def motion_blur(x: torch.Tensor, level: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Linear motion blur of length 5..27 px in a random direction per image (from ``generator``)."""
    x = _check_rgb(x)
    k = int(_param("motion_blur", level))
    angle = _rand((x.shape[0],), x, _generator(generator), normal=False) * 180.0
    zero = torch.zeros_like(angle)
    return kornia.filters.motion_blur(x, k, angle, zero, border_type="reflect").clamp(0.0, 1.0)


def gaussian_noise(x: torch.Tensor, level: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Additive white Gaussian noise, std 0.02..0.18 (independent per pixel and channel), clamped."""
    x = _check_rgb(x)
    std = _param("gaussian_noise", level)
    return (x + std * _rand(tuple(x.shape), x, _generator(generator), normal=True)).clamp(0.0, 1.0)


def jpeg(x: torch.Tensor, level: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """JPEG compression (kornia's differentiable codec) at quality 60, 35, 20, 10, 4."""
    x = _check_rgb(x)
    quality = torch.tensor([_param("jpeg", level)], dtype=x.dtype, device=x.device)
    return kornia.enhance.jpeg_codec_differentiable(x, quality).clamp(0.0, 1.0)


def contrast(x: torch.Tensor, level: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Contrast reduction towards the image's mean gray, factor 0.75..0.18."""
    x = _check_rgb(x)
    factor = _param("contrast", level)
    return kornia.enhance.adjust_contrast_with_mean_subtraction(x, factor).clamp(0.0, 1.0)


def brightness(x: torch.Tensor, level: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Darkening by a uniform shift of 0.08..0.4, clamped at black."""
    x = _check_rgb(x)
    return kornia.enhance.adjust_brightness(x, -_param("brightness", level), clip_output=True)


def saturation(x: torch.Tensor, level: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Desaturation: HSV saturation scaled by 0.6..0 (level 5 is grayscale)."""
    x = _check_rgb(x)
    return kornia.enhance.adjust_saturation(x, _param("saturation", level)).clamp(0.0, 1.0)


def pixelate(x: torch.Tensor, level: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Area down-sampling by 2..8 followed by nearest-neighbour up-sampling to the input size."""
    x = _check_rgb(x)
    factor = int(_param("pixelate", level))
    height, width = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, math.ceil(height / factor)), max(1, math.ceil(width / factor))), mode="area")
    return F.interpolate(small, size=(height, width), mode="nearest").clamp(0.0, 1.0)


def quantize(x: torch.Tensor, level: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """Uniform quantisation of each channel to 2**bits gray levels, bits 6..2 (mid-rise, rounding)."""
    x = _check_rgb(x)
    steps = 2 ** int(_param("quantize", level)) - 1
    return (torch.round(x * steps) / steps).clamp(0.0, 1.0)


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
