"""Training losses for denoisers placed in front of an NR-IQA model.

Notation: x clean images (B, C, H, W); z = D(clip(x + G)) denoised noisy images;
p = f(z) predicted scores (B,); t target scores (B,): human scores where a dataset
has them, else the frozen base model's clean scores f(x). All losses are scalar
tensors differentiable in their first argument.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "image_mse",
    "score_fidelity",
    "score_mse",
    "score_spread",
    "ranking_loss",
    "correlation_loss",
    "LossWeights",
    "combined_loss",
]


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.ndim != 1 or pred.shape != target.shape:
        raise ValueError(
            f"pred and target must be 1-D score vectors of the same length, got shapes {tuple(pred.shape)} "
            f"and {tuple(target.shape)}."
        )


def image_mse(denoised: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Mean squared pixel error between denoised (B, C, H, W) and clean images of the same shape."""
    if denoised.shape != clean.shape:
        raise ValueError(f"denoised and clean images differ in shape: {tuple(denoised.shape)} vs {tuple(clean.shape)}.")
    return (denoised - clean).pow(2).mean()


def score_fidelity(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute score error |f(D(x + G)) - t| over the batch, in score units."""
    _check_pair(pred, target)
    return (pred - target).abs().mean()


def score_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared score error (f(x') - t)^2 over the batch, in squared score units."""
    _check_pair(pred, target)
    return (pred - target).pow(2).mean()


def score_spread(draws: torch.Tensor) -> torch.Tensor:
    """Consistency across noise draws: ``draws`` (B, K) holds each image's scores under K
    noise draws; returns the mean over images of their variance across draws (population,
    divided by K), in squared score units. Zero iff every image scores the same under every
    draw. The spread of the noisy scores is what sets the width of a median certificate."""
    if draws.ndim != 2 or draws.shape[1] < 2:
        raise ValueError(f"score_spread needs scores of shape (B, K) with K >= 2 draws, got {tuple(draws.shape)}.")
    return (draws - draws.mean(dim=1, keepdim=True)).pow(2).mean()


def ranking_loss(pred: torch.Tensor, target: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Pairwise hinge ranking loss over all ordered pairs of the batch.

    For every pair (i, j) with ``target[i] > target[j]`` it charges
    ``max(0, margin - (pred[i] - pred[j]))``: zero once the pair is in the same order
    as the targets by at least ``margin`` score units. Pairs with equal targets are
    ignored. Returns the mean over the counted pairs (0 when there are none).
    Invariant to adding a constant to ``pred`` or to ``target``.
    """
    _check_pair(pred, target)
    if margin < 0:
        raise ValueError(f"margin must be >= 0 (score units), got {margin}.")
    ordered = target[:, None] > target[None, :]  # (i, j): t_i > t_j
    if not ordered.any():
        return pred.sum() * 0.0
    gap = pred[:, None] - pred[None, :]
    return torch.relu(margin - gap)[ordered].mean()


def correlation_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 - Pearson correlation of pred and target (in [0, 2]); needs B >= 2.

    Exactly invariant to positive affine maps of either argument; ``eps`` is a floor on
    the denominator that only guards a constant batch."""
    _check_pair(pred, target)
    if pred.shape[0] < 2:
        raise ValueError(f"correlation_loss needs a batch of at least 2 scores, got {pred.shape[0]}.")
    p = pred - pred.mean()
    t = target - target.mean()
    return 1.0 - (p * t).sum() / (p.norm() * t.norm()).clamp_min(eps)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the loss terms in :func:`combined_loss`; a zero weight skips the term.

    ``margin`` is the ranking margin in score units."""

    mse: float = 1.0
    fidelity: float = 0.0
    rank: float = 0.0
    corr: float = 0.0
    margin: float = 0.0

    def __post_init__(self) -> None:
        for name in ("mse", "fidelity", "rank", "corr", "margin"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"loss weight {name} must be a number >= 0, got {value!r}.")
        if self.mse == self.fidelity == self.rank == self.corr == 0:
            raise ValueError("all loss weights are zero; give at least one of mse, fidelity, rank, corr a weight > 0.")


def combined_loss(
    denoised: torch.Tensor, clean: torch.Tensor, pred: torch.Tensor, target: torch.Tensor, weights: LossWeights
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the terms with a non-zero weight; returns (total, {term: value}).

    The dict holds every term (also zero-weighted ones, for logging) as floats."""
    terms = {
        "mse": image_mse(denoised, clean),
        "fidelity": score_fidelity(pred, target),
        "rank": ranking_loss(pred, target, weights.margin),
        "corr": correlation_loss(pred, target) if pred.shape[0] >= 2 else pred.sum() * 0.0,
    }
    total = sum(getattr(weights, k) * v for k, v in terms.items() if getattr(weights, k) > 0)
    return total, {k: float(v.detach()) for k, v in terms.items()}
