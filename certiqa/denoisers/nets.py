"""Blind convolutional denoisers for noisy images in [0, 1].

All predict the noise and subtract it (residual learning), start as the identity
(zero-initialised last layer), work for any noise level (no noise-level input) and
any image size, and map (B, C, H, W) to (B, C, H, W) of the same dtype, clamped to
[0, 1] unless ``clamp=False``.

:class:`SubpixelDnCNN` is the cheap one: its convolutions run at 1/scale of the
resolution on pixel-unshuffled images, optionally depthwise-separable; its cost per
image is :meth:`SubpixelDnCNN.macs`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DnCNN", "UNet", "SubpixelDnCNN", "ARCHITECTURES"]


class DnCNN(nn.Module):
    """DnCNN (Zhang et al., 2017): conv-ReLU, (depth - 2) x conv[-BN]-ReLU, conv; output x - residual.

    Args:
        channels: image channels in and out.
        depth: number of 3x3 convolutions (>= 2); 17 in the paper.
        features: feature maps per hidden layer; 64 in the paper.
        batch_norm: batch normalisation in the hidden layers, as in the paper.
        clamp: clamp the output to [0, 1].
    """

    def __init__(
        self, channels: int = 3, depth: int = 17, features: int = 64, *, batch_norm: bool = True, clamp: bool = True
    ) -> None:
        super().__init__()
        for name, value, low in (("channels", channels, 1), ("depth", depth, 2), ("features", features, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"DnCNN {name} must be an int >= {low}, got {value!r}.")
        self.config: dict[str, Any] = {
            "channels": channels, "depth": depth, "features": features, "batch_norm": bool(batch_norm),
            "clamp": bool(clamp),
        }
        layers: list[nn.Module] = [nn.Conv2d(channels, features, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(features, features, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(features))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(features, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)
        nn.init.zeros_(self.body[-1].weight)  # starts as the identity: D(x) = x
        nn.init.zeros_(self.body[-1].bias)
        self.clamp = bool(clamp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) noisy -> (B, C, H, W) denoised."""
        out = x - self.body(x)
        return out.clamp(0.0, 1.0) if self.clamp else out


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A small residual U-Net: ``levels`` 2x downsamplings (average pooling), bilinear
    upsampling with skip concatenations, double 3x3 conv blocks; output x - residual.

    Inputs of any size are padded (replicate) to a multiple of 2**levels and cropped back.

    Args:
        channels: image channels in and out.
        features: feature maps at full resolution (doubled at each level).
        levels: number of downsamplings (>= 1).
        clamp: clamp the output to [0, 1].
    """

    def __init__(self, channels: int = 3, features: int = 32, levels: int = 2, *, clamp: bool = True) -> None:
        super().__init__()
        for name, value in (("channels", channels), ("features", features), ("levels", levels)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"UNet {name} must be an int >= 1, got {value!r}.")
        self.config: dict[str, Any] = {"channels": channels, "features": features, "levels": levels, "clamp": bool(clamp)}
        widths = [features * 2**i for i in range(levels + 1)]
        self.down = nn.ModuleList([_block(channels, widths[0])] + [_block(widths[i], widths[i + 1]) for i in range(levels)])
        self.up = nn.ModuleList([_block(widths[i + 1] + widths[i], widths[i]) for i in reversed(range(levels))])
        self.head = nn.Conv2d(widths[0], channels, 1)
        nn.init.zeros_(self.head.weight)  # starts as the identity
        nn.init.zeros_(self.head.bias)
        self.levels = levels
        self.clamp = bool(clamp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) noisy -> (B, C, H, W) denoised."""
        h, w = x.shape[-2:]
        m = 2**self.levels
        padded = F.pad(x, (0, (-w) % m, 0, (-h) % m), mode="replicate")
        skips = []
        feat = padded
        for i, block in enumerate(self.down):
            feat = block(feat if i == 0 else F.avg_pool2d(feat, 2))
            skips.append(feat)
        feat = skips.pop()
        for block in self.up:
            skip = skips.pop()
            feat = F.interpolate(feat, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            feat = block(torch.cat((feat, skip), dim=1))
        out = x - self.head(feat)[..., :h, :w]
        return out.clamp(0.0, 1.0) if self.clamp else out


class SubpixelDnCNN(nn.Module):
    """A DnCNN body working at 1/``scale`` resolution: the image is padded (replicate) to
    a multiple of ``scale``, pixel-unshuffled to (C * scale^2) channels, passed through
    conv3x3-ReLU, (depth - 2) hidden layers, conv3x3, pixel-shuffled back and cropped;
    the output is x minus that residual. ``scale=1`` is DnCNN without batch norm.

    Hidden layers are conv3x3-ReLU, or with ``separable=True`` depthwise conv3x3 then
    pointwise conv1x1 then ReLU (9F + F^2 instead of 9F^2 multiply-adds per position).

    Args:
        channels: image channels in and out.
        scale: pixel-unshuffle factor (>= 1); 2 works at half resolution.
        depth: number of 3x3 layers (>= 2), the first and last included.
        features: feature maps per hidden layer.
        separable: depthwise-separable hidden layers.
        clamp: clamp the output to [0, 1].
    """

    def __init__(
        self,
        channels: int = 3,
        scale: int = 2,
        depth: int = 5,
        features: int = 24,
        *,
        separable: bool = False,
        clamp: bool = True,
    ) -> None:
        super().__init__()
        for name, value, low in (("channels", channels, 1), ("scale", scale, 1), ("depth", depth, 2),
                                 ("features", features, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"SubpixelDnCNN {name} must be an int >= {low}, got {value!r}.")
        self.config: dict[str, Any] = {
            "channels": channels, "scale": scale, "depth": depth, "features": features,
            "separable": bool(separable), "clamp": bool(clamp),
        }
        wide = channels * scale * scale
        layers: list[nn.Module] = [nn.Conv2d(wide, features, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            if separable:
                layers += [nn.Conv2d(features, features, 3, padding=1, groups=features, bias=False),
                           nn.Conv2d(features, features, 1)]
            else:
                layers.append(nn.Conv2d(features, features, 3, padding=1))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(features, wide, 3, padding=1))
        self.body = nn.Sequential(*layers)
        nn.init.zeros_(self.body[-1].weight)  # starts as the identity: D(x) = x
        nn.init.zeros_(self.body[-1].bias)
        self.scale = scale
        self.clamp = bool(clamp)

    def macs(self, height: int, width: int) -> int:
        """Multiply-accumulates of the convolutions for one (C, height, width) image
        (padding to a multiple of ``scale`` included; ReLU, shuffles and the subtraction not)."""
        s = self.scale
        positions = -(-height // s) * -(-width // s)
        return positions * sum(
            m.weight.numel() for m in self.body if isinstance(m, nn.Conv2d)  # out * in/groups * kh * kw
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) noisy -> (B, C, H, W) denoised."""
        h, w = x.shape[-2:]
        s = self.scale
        padded = F.pad(x, (0, (-w) % s, 0, (-h) % s), mode="replicate") if (h % s or w % s) else x
        residual = F.pixel_shuffle(self.body(F.pixel_unshuffle(padded, s)), s)[..., :h, :w]
        out = x - residual
        return out.clamp(0.0, 1.0) if self.clamp else out


ARCHITECTURES: dict[str, type[nn.Module]] = {"dncnn": DnCNN, "unet": UNet, "subpixel_dncnn": SubpixelDnCNN}
