"""CNNIQA (Kang et al., CVPR 2014): a vectorised, differentiable port.

Conventions follow the original implementation published with the LIVE weights:
non-overlapping 32x32 patches at rows ``range(0, H - 32, 32)`` and columns
``range(0, W - 32, 32)``; each patch normalised as ``(p - mean3x3) / (std3x3 + 1)``
with edge-replicating padding; conv 7x7 (50) -> global max and min pooling ->
fc 100-800 -> ReLU -> fc 800-800 -> ReLU -> fc 800-1; the image score is the mean
of its patch scores.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..loading import read_checkpoint

__all__ = ["CNNIQA", "rgb_to_luma", "load_state_dict_file", "check_state_dict"]

PATCH = 32


def rgb_to_luma(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) float ITU-R 601-2 luma (not rounded)."""
    # ITU-R 601-2 weights, as PIL's convert('L') before rounding (a literal, for TorchScript)
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def check_state_dict(state: Any, expected: dict[str, torch.Size], path: str, what: str) -> dict[str, torch.Tensor]:
    """Check that ``state`` is a dict of tensors with exactly the ``expected`` keys and shapes
    (a ``module.`` prefix from DataParallel is dropped); return it."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{path!r} does not hold a state dict of tensors for {what}; got {type(state).__name__}. "
            "Expected a file written by torch.save(model.state_dict())."
        )
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{path!r} is not a {what} state dict: missing keys {missing}, unexpected keys {unexpected}."
        )
    wrong = {k: (tuple(state[k].shape), tuple(s)) for k, s in expected.items() if state[k].shape != s}
    if wrong:
        raise ValueError(f"{path!r} has tensors of the wrong shape for {what} (got, expected): {wrong}.")
    return state


def load_state_dict_file(path: str | os.PathLike, expected: dict[str, torch.Size], what: str) -> dict[str, torch.Tensor]:
    """Load a plain state dict with ``weights_only=True`` onto the CPU and check its keys and shapes."""
    state = read_checkpoint(path, what)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return check_state_dict(state, expected, os.fspath(path), what)


class CNNIQA(nn.Module):
    """CNNIQA taking (B, 1, H, W) or (B, 3, H, W) images in [0, 1] to scores (B,).

    Three-channel input is converted to float (unrounded) luma, which keeps the
    model differentiable; the original code rounds luma to 8 bits, and feeding that
    8-bit grayscale as one channel reproduces it exactly. Images need H, W >= 33.

    ``torch.jit.script`` compiles it for any image size, and ``torch.export`` with
    dynamic batch, H and W works under size-oblivious shapes
    (:func:`certiqa.models.save_exported` does both steps).

    Args:
        kernels: number of 7x7 convolution kernels (50 in the paper).
        hidden: width of the two hidden fully connected layers (800).
        lower_better: whether a lower score means better quality (True for
            LIVE DMOS, the scale of the published weights).
        score_range: nominal (min, max) of the score scale.
    """

    __constants__ = ["min_size", "patch", "patch_chunk"]  # TorchScript: compiled as constants
    min_size = PATCH + 1
    patch = PATCH
    patch_chunk = 128  # patches per convolution call in eager mode and TorchScript

    def __init__(
        self,
        kernels: int = 50,
        hidden: int = 800,
        *,
        lower_better: bool = True,
        score_range: tuple[float, float] = (0.0, 100.0),
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, kernels, 7)
        self.fc1 = nn.Linear(2 * kernels, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, 1)
        self.dropout = nn.Dropout()
        self.lower_better = lower_better
        self.score_range = score_range

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs: Any) -> "CNNIQA":
        """Load published CNNIQA weights (a plain state dict, possibly saved on CUDA)."""
        model = cls(**kwargs)
        expected = {k: v.shape for k, v in model.state_dict().items()}
        model.load_state_dict(load_state_dict_file(path, expected, "CNNIQA"))
        return model.eval()

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> normalised patches (B, P, 1, 32, 32), P patches per image."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            shape = ", ".join([str(d) for d in x.shape])
            raise ValueError(f"CNNIQA expects images of shape (B, 1, H, W) or (B, 3, H, W), got ({shape}).")
        batch, height, width = x.shape[0], x.shape[2], x.shape[3]
        if height < self.min_size or width < self.min_size:
            raise ValueError(
                f"CNNIQA needs images of at least {self.min_size}x{self.min_size} pixels, got {height}x{width}."
            )
        gray = rgb_to_luma(x) if x.shape[1] == 3 else x
        # patches start at rows range(0, H - 32, 32): the 32-step windows of the first H - 1 rows
        size = self.patch
        p = gray[:, 0, : height - 1, : width - 1].unfold(1, size, size).unfold(2, size, size)
        count = p.shape[1] * p.shape[2]
        p = p.reshape(batch * count, 1, size, size)
        padded = F.pad(p, (1, 1, 1, 1), mode="replicate")
        mean = F.avg_pool2d(padded, 3, stride=1)
        mean_sq = F.avg_pool2d(padded * padded, 3, stride=1)
        # clamp_min keeps the gradient of sqrt finite on flat regions (std 1e-5 instead of 0)
        std = (mean_sq - mean * mean).clamp_min(1e-10).sqrt()
        return ((p - mean) / (std + 1.0)).reshape(batch, count, 1, size, size)

    def patch_scores(self, patches: torch.Tensor) -> torch.Tensor:
        """Normalised patches (..., 1, 32, 32) -> patch scores (...).

        The convolution runs over chunks of ``patch_chunk`` patches so that its
        (chunk, 50, 26, 26) output stays cache-sized whatever the batch. While tracing
        or exporting it runs once over all patches (the same arithmetic per patch), so
        that a trace or an exported program holds no chunk count of its example input."""
        lead = patches.shape[:-3]
        flat = patches.reshape(-1, 1, self.patch, self.patch)
        if torch.jit.is_scripting():
            whole = False  # TorchScript keeps the loop over a dynamic chunk count
        else:  # a trace or an exported program would freeze the chunk count of its example input
            whole = torch.jit.is_tracing() or torch.compiler.is_exporting()
        if whole:
            h = self.conv1(flat).flatten(2)
            pooled = torch.cat((h.amax(dim=2), h.amin(dim=2)), dim=1)
        else:
            chunks = []
            for start in range(0, flat.shape[0], self.patch_chunk):
                h = self.conv1(flat[start : start + self.patch_chunk]).flatten(2)
                chunks.append(torch.cat((h.amax(dim=2), h.amin(dim=2)), dim=1))
            pooled = torch.cat(chunks)
        h = self.dropout(F.relu(self.fc1(pooled)))
        h = F.relu(self.fc2(h))
        return self.fc3(h).reshape(lead)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [0, 1] -> scores (B,), the mean of the patch scores."""
        return self.patch_scores(self.patches(x)).mean(dim=1)
