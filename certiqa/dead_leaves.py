"""Procedural dead-leaves images: redistributable training content with the statistics of
natural images.

The dead-leaves model (Matheron 1968; Lee, Mumford & Huang 2001) drops opaque disks whose
radii have density proportional to r^-3 between ``radius_min`` and ``radius_max``; the
result is scale invariant over that range and has the occlusions, edges and roughly 1/f^2
power spectrum of photographs, which is why it is used to train denoisers without
photographs (Achddou et al. 2021, "Synthetic images as a regularity prior for image
restoration neural networks"). Disks are laid front to back, each covering only what is
still uncovered, until the image is covered; each disk gets a colour (uniform in RGB, or
drawn from a ``palette`` of colours, e.g. a photograph's pixels) and an optional sinusoidal
texture; the image is drawn at twice its size and area-downscaled, so edges are
anti-aliased. Everything random comes from ``generator``, so a seed gives the same image.

    x = dead_leaves(384, 512, generator=torch.Generator().manual_seed(0))   # (3, 384, 512)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._checks import check_int, check_nonnegative, check_positive

__all__ = ["dead_leaves", "dead_leaves_radii"]

_SUPERSAMPLE = 2


def _check_radii(radius_min: float, radius_max: float) -> None:
    check_positive("radius_min", radius_min)
    if not radius_max > radius_min:
        raise ValueError(
            f"radius_max must be larger than radius_min, got radius_min={radius_min}, radius_max={radius_max}."
        )


def dead_leaves_radii(
    count: int, radius_min: float, radius_max: float, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``count`` radii with density proportional to r^-3 on [radius_min, radius_max], shape (count,).

    Inverse-CDF sampling: with u uniform, r = (rmin^-2 - u (rmin^-2 - rmax^-2))^(-1/2), so
    P(r <= t) = (rmin^-2 - t^-2) / (rmin^-2 - rmax^-2) exactly."""
    check_int("count", count, minimum=1)
    _check_radii(radius_min, radius_max)
    u = torch.rand(count, generator=generator, dtype=torch.float64)
    lo, hi = radius_min ** -2, radius_max ** -2
    return (lo - u * (lo - hi)).rsqrt()


def dead_leaves(
    height: int,
    width: int,
    *,
    radius_min: float = 2.0,
    radius_max: float | None = None,
    palette: torch.Tensor | None = None,
    texture: float = 0.2,
    max_disks: int = 200_000,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A dead-leaves RGB image of shape (3, height, width), float32 in [0, 1].

    Args:
        radius_min, radius_max: disk radii in output pixels (density r^-3); ``radius_max``
            defaults to the image's longer side.
        palette: (K, 3) colours in [0, 1] to draw disk colours from (uniformly over the K
            rows); None: uniform in the RGB cube.
        texture: the largest amplitude of each disk's sinusoidal grating (amplitude, period
            of 2-32 px and orientation drawn per disk); 0 gives flat disks.
        max_disks: stop after this many disks even if pixels remain uncovered (they then
            take the mean colour of the disks drawn).
    """
    check_int("height", height, minimum=1)
    check_int("width", width, minimum=1)
    check_int("max_disks", max_disks, minimum=1)
    check_nonnegative("texture", texture)
    if radius_max is None:
        radius_max = float(max(height, width))
    _check_radii(radius_min, radius_max)
    if palette is not None:
        if not isinstance(palette, torch.Tensor) or palette.ndim != 2 or palette.shape[1] != 3 or palette.shape[0] < 1:
            got = tuple(palette.shape) if isinstance(palette, torch.Tensor) else type(palette).__name__
            raise ValueError(f"palette must be a (K, 3) tensor of RGB colours, K >= 1, got {got}.")
        if not palette.is_floating_point() or float(palette.min()) < 0 or float(palette.max()) > 1:
            raise ValueError("palette must hold floating RGB colours in [0, 1]; divide 8-bit colours by 255.")
    s = _SUPERSAMPLE
    h, w = height * s, width * s
    canvas = torch.zeros(3, h, w)
    free = torch.ones(h, w, dtype=torch.bool)
    left = h * w
    drawn = 0
    colour_sum = torch.zeros(3)
    chunk = 1024
    while left > 0 and drawn < max_disks:
        k = min(chunk, max_disks - drawn)
        radii = dead_leaves_radii(k, radius_min * s, radius_max * s, generator=generator)
        centres = torch.rand(k, 2, generator=generator, dtype=torch.float64) * torch.tensor([h, w], dtype=torch.float64)
        if palette is None:
            colours = torch.rand(k, 3, generator=generator)
        else:
            colours = palette[torch.randint(palette.shape[0], (k,), generator=generator)].float()
        amps = torch.rand(k, generator=generator) * texture
        periods = (2.0 * 16.0 ** torch.rand(k, generator=generator, dtype=torch.float64)) * s
        angles = torch.rand(k, generator=generator, dtype=torch.float64) * math.pi
        phases = torch.rand(k, generator=generator, dtype=torch.float64) * 2 * math.pi
        for i in range(k):
            r, (cy, cx) = float(radii[i]), centres[i].tolist()
            y0, y1 = max(0, math.floor(cy - r)), min(h, math.ceil(cy + r) + 1)
            x0, x1 = max(0, math.floor(cx - r)), min(w, math.ceil(cx + r) + 1)
            drawn += 1
            colour_sum += colours[i]
            if y0 >= y1 or x0 >= x1:
                continue
            ys = torch.arange(y0, y1, dtype=torch.float64)[:, None] + 0.5
            xs = torch.arange(x0, x1, dtype=torch.float64)[None, :] + 0.5
            inside = ((ys - cy) ** 2 + (xs - cx) ** 2 <= r * r) & free[y0:y1, x0:x1]
            if not inside.any():
                continue
            value = colours[i][:, None, None].expand(3, y1 - y0, x1 - x0)
            if amps[i] > 0:
                a = float(angles[i])
                wave = torch.sin(2 * math.pi * (ys * math.cos(a) + xs * math.sin(a)) / float(periods[i]) + float(phases[i]))
                value = value * (1 + float(amps[i]) * wave.float())
            region = canvas[:, y0:y1, x0:x1]
            region[:, inside] = value[:, inside]
            free[y0:y1, x0:x1] &= ~inside
            left -= int(inside.sum())
    if left > 0:
        canvas[:, free] = (colour_sum / drawn)[:, None]
    return F.avg_pool2d(canvas[None], s)[0].clamp_(0, 1)
