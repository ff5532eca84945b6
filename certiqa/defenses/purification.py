"""Input purification defenses: an image transform put in front of an IQA model.

Every defense is an ``nn.Module`` mapping images (B, C, H, W) in [0, 1] to images of
the same shape, dtype and device, in [0, 1], built on kornia where kornia has the
operation. Two class attributes say how an adaptive attack must treat it:

- ``differentiable``: False when the exact input gradient is zero or uninformative
  (rounding, selection). :class:`Purified` then replaces the defense's backward pass
  by the identity (BPDA, Athalye et al., ICML 2018): the forward value is unchanged,
  the gradient is the model's gradient at the purified image.
- ``random``: True when each call draws random parameters, one draw per image, from
  the defense's own CPU generator (``seed``; :meth:`RandomPurification.manual_seed`
  restarts it), so runs are reproducible on every device. Attacks average the score
  over draws (expectation over transformation, :class:`ExpectedPurifiedScore`).

``Purified(model, defense)`` is the defended model ``f(defense(x))``; it carries the
model's ``lower_better``, ``score_range`` and ``min_size``.
"""

from __future__ import annotations

import abc
import math
from typing import Any, Callable

import kornia
import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_images, check_int, check_positive, check_scores

__all__ = [
    "Purification",
    "RandomPurification",
    "JPEG",
    "GaussianBlur",
    "MedianFilter",
    "ResizeDownUp",
    "BitDepth",
    "RandomResizePad",
    "RandomRotation",
    "bpda",
    "Purified",
    "ExpectedPurifiedScore",
    "default_purifications",
]

ScoreModel = Callable[[torch.Tensor], torch.Tensor]


class Purification(nn.Module, abc.ABC):
    """Base class: ``forward`` checks the images and calls :meth:`purify`, then clamps to [0, 1]."""

    differentiable: bool = True
    random: bool = False

    @property
    @abc.abstractmethod
    def label(self) -> str:
        """A short name with the setting, used as the column name in comparisons."""

    @abc.abstractmethod
    def purify(self, x: torch.Tensor) -> torch.Tensor:
        """The transform itself, on checked images (B, C, H, W); the result is clamped by ``forward``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> purified images, same shape, dtype and device, in [0, 1]."""
        check_images(x.detach())
        return self.purify(x).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return repr(self.label)


class RandomPurification(Purification):
    """A purification with random parameters drawn per image from its own CPU generator.

    ``seed=None`` seeds the generator from fresh randomness; an int makes every run
    reproducible. :meth:`manual_seed` restarts the stream (the comparison scores the
    clean and the attacked image under the same draw that way)."""

    random = True

    def __init__(self, seed: int | None = None) -> None:
        super().__init__()
        self.generator = torch.Generator()
        self.manual_seed(seed)

    def manual_seed(self, seed: int | None) -> None:
        """Restart the parameter stream from ``seed`` (None: fresh randomness)."""
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(check_int("seed", seed, minimum=0))

    def uniform(self, count: int, low: float, high: float) -> torch.Tensor:
        """``count`` draws from U[low, high] (float64, CPU)."""
        return low + (high - low) * torch.rand(count, generator=self.generator, dtype=torch.float64)


class JPEG(Purification):
    """JPEG compression at ``quality`` (1-100) with kornia's differentiable codec
    (``kornia.enhance.jpeg_codec_differentiable``: standard tables, 4:2:0 chroma).

    That codec replaces rounding by ``r + (v - r)^3`` (r = round(v)), so its output
    differs from a libjpeg decode by less than 1/8 of a quantisation step per DCT
    coefficient, and its gradient is the one used by differentiable-JPEG attacks.
    One-channel images are coded as grey RGB."""

    def __init__(self, quality: float = 75) -> None:
        super().__init__()
        self.quality = check_positive("quality", quality)
        if self.quality > 100:
            raise ValueError(f"quality must lie in (0, 100], got {quality!r}.")

    @property
    def label(self) -> str:
        return f"JPEG q{self.quality:g}"

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        rgb = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        if rgb.shape[1] != 3:
            raise ValueError(f"JPEG codes images with 1 or 3 channels, got shape {tuple(x.shape)}.")
        quality = torch.tensor([self.quality], dtype=x.dtype, device=x.device)
        out = kornia.enhance.jpeg_codec_differentiable(rgb, quality)
        return out.mean(dim=1, keepdim=True) if x.shape[1] == 1 else out


class GaussianBlur(Purification):
    """Gaussian blur of standard deviation ``sigma`` pixels (kernel 2 ceil(3 sigma) + 1, reflected borders)."""

    def __init__(self, sigma: float = 1.0) -> None:
        super().__init__()
        self.sigma = check_positive("sigma", sigma)
        self.kernel = 2 * math.ceil(3 * self.sigma) + 1

    @property
    def label(self) -> str:
        return f"Gaussian blur s{self.sigma:g}"

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        sigma = torch.tensor([[self.sigma, self.sigma]], dtype=x.dtype, device=x.device)
        return kornia.filters.gaussian_blur2d(x, self.kernel, sigma, border_type="reflect")


class MedianFilter(Purification):
    """Median filter over ``size`` x ``size`` windows (reflected borders), per channel.

    Not ``differentiable``: its exact gradient sends each output's gradient to the one
    input pixel that is the window's median, a selection that flips under tiny
    changes; adaptive attacks use BPDA instead (the usual attack on median filters)."""

    differentiable = False

    def __init__(self, size: int = 3) -> None:
        super().__init__()
        self.size = check_int("size", size, minimum=3)
        if self.size % 2 == 0:
            raise ValueError(f"size must be odd (the window is centred on the pixel), got {size}.")

    @property
    def label(self) -> str:
        return f"median {self.size}x{self.size}"

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        return kornia.filters.median_blur(x, self.size)


class ResizeDownUp(Purification):
    """Downscale by ``factor`` (antialiased bilinear) and upscale back to the input size (bilinear)."""

    def __init__(self, factor: float = 0.5) -> None:
        super().__init__()
        factor = check_positive("factor", factor)
        if factor >= 1:
            raise ValueError(f"factor must lie in (0, 1) (a downscale), got {factor!r}.")
        self.factor = factor

    @property
    def label(self) -> str:
        return f"resize x{self.factor:g} and back"

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        small = (max(1, round(h * self.factor)), max(1, round(w * self.factor)))
        down = kornia.geometry.transform.resize(x, small, interpolation="bilinear", antialias=True)
        return kornia.geometry.transform.resize(down, (h, w), interpolation="bilinear")


class BitDepth(Purification):
    """Bit-depth reduction to ``bits`` bits per channel: ``round(x (2^b - 1)) / (2^b - 1)``
    (the rounding of feature squeezing, Xu et al., NDSS 2018).

    ``kornia.enhance.posterize`` is not used: it truncates, which darkens every pixel
    by half a level on average (1.0 -> 0.75 at 2 bits) and so shifts quality scores
    by itself. Not ``differentiable`` (its gradient is zero almost everywhere): BPDA."""

    differentiable = False

    def __init__(self, bits: int = 5) -> None:
        super().__init__()
        self.bits = check_int("bits", bits)
        if self.bits > 16:
            raise ValueError(f"bits must lie in 1..16, got {bits}.")

    @property
    def label(self) -> str:
        return f"{self.bits}-bit depth"

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        levels = 2**self.bits - 1
        return torch.round(x * levels) / levels


class RandomResizePad(RandomPurification):
    """Random resizing and padding (Xie et al., ICLR 2018), size-preserving: each image is
    resized by a factor s ~ U[min_scale, 1] (antialiased bilinear) and padded back to its
    size at a random offset by reflection (zero borders would read as a quality change)."""

    def __init__(self, min_scale: float = 0.9, seed: int | None = None) -> None:
        super().__init__(seed)
        min_scale = check_positive("min_scale", min_scale)
        if not 0.5 <= min_scale < 1:
            raise ValueError(f"min_scale must lie in [0.5, 1) (reflection padding needs pad < size), got {min_scale!r}.")
        self.min_scale = min_scale

    @property
    def label(self) -> str:
        return f"random resize {self.min_scale:g}-1 + pad"

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        scales = self.uniform(x.shape[0], self.min_scale, 1.0)
        offsets = torch.rand((x.shape[0], 2), generator=self.generator, dtype=torch.float64)
        out = []
        for image, scale, (dy, dx) in zip(x, scales.tolist(), offsets.tolist()):
            # each reflected pad must be shorter than the resized side: keep more than half of it
            size = (max(h // 2 + 1, round(h * scale)), max(w // 2 + 1, round(w * scale)))
            size = (min(size[0], h), min(size[1], w))
            small = kornia.geometry.transform.resize(image[None], size, interpolation="bilinear", antialias=True)
            top, left = int(dy * (h - size[0] + 1)), int(dx * (w - size[1] + 1))
            pad = (left, w - size[1] - left, top, h - size[0] - top)
            out.append(F.pad(small, pad, mode="reflect") if any(pad) else small)
        return torch.cat(out)


class RandomRotation(RandomPurification):
    """Rotation by a random angle ~ U[-max_degrees, max_degrees] about the centre
    (bilinear, reflected borders).

    The extra defense, from the IQA purification study of Gushchin et al. (arXiv
    2404.06957) whose purification set the "Guardians of Image Quality" benchmark (same
    group, ICML 2025) builds on: there, simple geometric transforms (rotation, flips)
    were surprisingly effective against attacks on NR-IQA metrics. They move the
    perturbation off the pixel grid it was optimised on while adding no blur, noise or
    compression, so the image's quality, and a no-reference metric's clean score, should
    move little. A flip is deterministic and linear, so an adaptive attack undoes it
    exactly; a random rotation has to be attacked through EOT.
    """

    def __init__(self, max_degrees: float = 10.0, seed: int | None = None) -> None:
        super().__init__(seed)
        self.max_degrees = check_positive("max_degrees", max_degrees)

    @property
    def label(self) -> str:
        return f"random rotation {self.max_degrees:g} deg"

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        angles = self.uniform(x.shape[0], -self.max_degrees, self.max_degrees).to(device=x.device, dtype=x.dtype)
        return kornia.geometry.transform.rotate(x, angles, padding_mode="reflection", align_corners=True)


class _IdentityBackward(torch.autograd.Function):
    """Forward: ``fn(x)`` without a graph; backward: the incoming gradient unchanged."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            return fn(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def bpda(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` whose backward pass is the identity (BPDA with g(x) = x); ``fn`` must keep x's shape."""
    return _IdentityBackward.apply(x, fn)


class Purified(nn.Module):
    """The defended model ``f(defense(x))``: images (B, C, H, W) in [0, 1] -> scores (B,).

    ``bpda=None`` backpropagates through the defense when it is ``differentiable`` and
    through the identity (BPDA) otherwise; True / False force either. The forward value
    is the same either way. Carries ``model``'s ``lower_better``, ``score_range`` and
    ``min_size``."""

    def __init__(self, model: nn.Module | ScoreModel, defense: Purification, *, bpda: bool | None = None) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be an nn.Module or a callable, got {type(model).__name__}.")
        if not isinstance(defense, Purification):
            raise TypeError(
                f"defense must be a certiqa.defenses.Purification (JPEG, GaussianBlur, ...), got {type(defense).__name__}."
            )
        self.model = model
        self.defense = defense
        self.bpda = (not defense.differentiable) if bpda is None else bool(bpda)
        for name in ("lower_better", "score_range", "min_size"):
            if hasattr(model, name):
                setattr(self, name, getattr(model, name))

    @property
    def random(self) -> bool:
        return self.defense.random

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        """The image the model sees (with the BPDA backward pass when ``self.bpda``)."""
        return bpda(self.defense, x) if self.bpda else self.defense(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return check_scores(self.model(self.purify(x)), x.shape[0], where="the purified model")


class ExpectedPurifiedScore(nn.Module):
    """Expectation over transformation for a random defense: the mean of ``purified``'s
    score over ``samples`` independent draws per image. Input (B, C, H, W), output (B,);
    the surrogate that white-box attacks climb. Carries ``lower_better`` / ``score_range``."""

    def __init__(self, purified: Purified, samples: int = 8) -> None:
        super().__init__()
        if not isinstance(purified, Purified):
            raise TypeError(f"purified must be a certiqa.defenses.Purified, got {type(purified).__name__}.")
        self.purified = purified
        self.samples = check_int("samples", samples)
        for name in ("lower_better", "score_range"):
            if hasattr(purified, name):
                setattr(self, name, getattr(purified, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, k = x.shape[0], self.samples
        return self.purified(x.repeat_interleave(k, dim=0)).view(batch, k).mean(dim=1)


def default_purifications(seed: int = 0) -> list[Purification]:
    """The seven purifications of the defense comparison at their default settings
    (random ones seeded with ``seed`` and ``seed + 1``)."""
    return [
        JPEG(75),
        GaussianBlur(1.0),
        MedianFilter(3),
        ResizeDownUp(0.5),
        BitDepth(5),
        RandomResizePad(0.9, seed=seed),
        RandomRotation(10.0, seed=seed + 1),
    ]
