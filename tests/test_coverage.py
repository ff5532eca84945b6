"""Monte-Carlo coverage of the certificates on closed-form models.

Each test repeats certification over independent seeds and counts the runs whose
interval misses the exact range of the smoothed median over the l2 ball. The
certificate promises a miss probability <= alpha per run, so the miss count is
stochastically below Binomial(runs, alpha). Every test applies the same stated
check: a one-sided exact binomial test of H0 "miss rate <= alpha" at level 0.001
must not reject (:func:`assert_coverage`). A sound procedure fails it with
probability <= 0.001; an unsound one (e.g. a rank read one sample inward) misses
far more often and fails it.
"""

from __future__ import annotations

import math

import pytest
import torch
import numpy as np
from scipy import integrate, stats
from torch import nn

from certiqa import SmoothedIQA, bounds

from conftest import Linear

LEVEL = 0.001  # level of the one-sided binomial test in every coverage test


def assert_coverage(misses: int, runs: int, alpha: float, level: float = LEVEL) -> None:
    """One-sided exact binomial test of H0: P[miss] <= alpha; fail when it rejects at ``level``."""
    p_value = stats.binomtest(misses, runs, alpha, alternative="greater").pvalue
    assert p_value >= level, f"{misses} misses in {runs} runs at alpha={alpha}: binomial p-value {p_value:.2e} < {level}"


class Exp(Linear):
    """f(z) = exp(w.z + b): lognormal scores, percentiles exp(mu + s z_p)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.exp(super().forward(z))


class Floor(Linear):
    """f(z) = floor(w.z + b): integer scores with heavy ties; h_p = ceil(mu + s z_p - 1)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.floor(super().forward(z))


def _setup(model_cls, seed: int, **kwargs):
    shape = (1, 1, 4, 4)
    model = model_cls(16, seed, **kwargs)
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        mu = float(Linear.forward(model, x))
        w_norm = float(model.w.norm())
    return model, x, mu, w_norm


@pytest.mark.parametrize(
    "model_cls, kwargs, truth",
    [
        # exact range of the smoothed median h_0.5(x + d) over ||d||_2 <= eps, as (lo, hi)
        (Linear, {}, lambda mu, r: (mu - r, mu + r)),
        (Exp, {}, lambda mu, r: (math.exp(mu - r), math.exp(mu + r))),
        (Floor, {"scale": 1.0, "bias": 0.5}, lambda mu, r: (math.ceil(mu - r - 1), math.ceil(mu + r - 1))),
    ],
    ids=["linear", "exp-linear", "floor-linear (ties)"],
)
def test_certify_covers_the_exact_range_of_the_smoothed_median(model_cls, kwargs, truth):
    runs, n, sigma, eps, alpha = 200, 200, 0.25, 0.1, 0.1
    model, x, mu, w_norm = _setup(model_cls, 3, **kwargs)
    true_lo, true_hi = truth(mu, eps * w_norm)
    misses = 0
    for seed in range(runs):
        res = SmoothedIQA(model, sigma, n=n, alpha=alpha, batch_size=n, clip=False, seed=seed).certify(x, eps)
        assert bool(res.certified)
        misses += not (float(res.lower) <= true_lo and true_hi <= float(res.upper))
    assert_coverage(misses, runs, alpha)
    if model_cls is Floor:  # the ties are real: few distinct scores per run
        samples = SmoothedIQA(model, sigma, n=n, clip=False, seed=0).sample(x)
        assert len(torch.unique(samples)) <= 10


@pytest.mark.parametrize("model_cls, kwargs", [(Linear, {}), (Exp, {}), (Floor, {"scale": 1.0, "bias": 0.5})],
                         ids=["linear", "exp-linear", "floor-linear (ties)"])
def test_certified_radius_claim_holds(model_cls, kwargs):
    """For eps < radius every smoothed median of x + d lies within delta of the reported median."""
    runs, n, sigma, alpha, delta = 200, 300, 0.25, 0.1, 0.5
    model, x, mu, w_norm = _setup(model_cls, 5, **kwargs)
    transform = {Linear: lambda t: t, Exp: math.exp, Floor: lambda t: math.ceil(t - 1)}[model_cls]
    misses = 0
    for seed in range(runs):
        smoothed = SmoothedIQA(model, sigma, n=n, alpha=alpha, batch_size=n, clip=False, seed=seed)
        radius = float(smoothed.certified_radius(x, delta)[0])
        median = float(smoothed.predict(x)[0])
        # h_0.5(x + d) = transform(mu + w.d) is monotone in w.d, so its extremes over the
        # closed ball of the radius are at w.d = -/+ radius |w| (a supremum: eps < radius)
        extremes = [transform(mu - radius * w_norm * (1 - 1e-12)), transform(mu + radius * w_norm * (1 - 1e-12))]
        misses += max(abs(v - median) for v in extremes) > delta
    assert_coverage(misses, runs, alpha)


class Rounded(nn.Module):
    """A low-precision model: 89.5 + w.(z - x0), rounded to ``dtype`` on output."""

    def __init__(self, x0: torch.Tensor, scale: float, dtype: torch.dtype) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        w = torch.randn(x0.numel(), generator=g, dtype=torch.float64)
        self.w = nn.Parameter(w / w.norm() * scale)
        self.register_buffer("x0", x0.flatten())
        self.dtype = dtype

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (89.5 + (z.flatten(1) - self.x0) @ self.w).to(self.dtype)


@pytest.mark.parametrize(
    "dtype, delta, half_spacing",
    [(torch.bfloat16, 0.3, 0.25), (torch.float16, 0.04, 0.03125)],
    ids=["bfloat16", "float16"],
)
def test_certified_radius_is_sound_for_half_precision_scores(dtype, delta, half_spacing):
    """Scores rounded to bf16/fp16 near 89.5 take the values 89.5 and its neighbours
    89.5 -/+ 2 * half_spacing, which lie farther than delta. About 60 % of the noisy
    scores round to 89.5 (the model's std is set to make it so): the claim "within
    delta for eps < radius" holds only while the true median stays at 89.5, i.e.
    radius * |w| < half_spacing. Comparing in the score dtype (89.5 - 0.3 = 89.0 in
    bf16) counted the neighbours as inside and broke the claim in every run."""
    runs, n, sigma, alpha = 100, 400, 0.1, 0.1
    x = torch.rand((1, 1, 4, 4), generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.5 + 0.25
    w_norm = half_spacing / stats.norm.ppf(0.8) / sigma  # P[|f(x + G) - 89.5| < half_spacing] = 0.6
    model = Rounded(x, w_norm, dtype)
    misses = 0
    for seed in range(runs):
        smoothed = SmoothedIQA(model, sigma, n=n, alpha=alpha, batch_size=n, clip=False, seed=seed)
        samples = smoothed.sample(x)
        assert samples.dtype == torch.float64
        assert set(torch.unique(samples).tolist()) <= {89.5 - 2 * half_spacing, 89.5, 89.5 + 2 * half_spacing,
                                                        89.5 - 4 * half_spacing, 89.5 + 4 * half_spacing}
        radius = float(smoothed.certified_radius(x, delta)[0])
        median = float(smoothed.predict(x)[0])
        assert median == 89.5
        misses += radius * w_norm >= half_spacing  # the true median leaves 89.5 inside the claimed ball
    assert_coverage(misses, runs, alpha)


def _expected_normal_order_statistic(k: int, n: int) -> float:
    """E[Z_(k)] for n i.i.d. standard normals: Z_(k) = Phi^-1(U_(k)), U_(k) ~ Beta(k, n - k + 1)."""
    beta = stats.beta(k, n - k + 1)
    lo, hi = beta.ppf(1e-12), beta.ppf(1 - 1e-12)
    value, _ = integrate.quad(lambda u: stats.norm.ppf(u) * beta.pdf(u), lo, hi, limit=200)
    return value


def test_linear_model_interval_width_matches_the_exact_order_statistics():
    """f(x + G) ~ N(mu, s^2), s = sigma |w|: E[upper - lower] = s (E Z_(k_upper) - E Z_(k_lower))
    exactly; the mean over 200 seeds must match it within 3 % (its standard error is < 1 %)."""
    shape, n, sigma, eps, alpha, runs = (1, 4, 4), 500, 0.25, 0.1, 0.1, 200
    model = Linear(16, 0)
    x = torch.rand((1,) + shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    widths = [
        float(SmoothedIQA(model, sigma, n=n, alpha=alpha, batch_size=250, clip=False, seed=seed).certify(x, eps).width)
        for seed in range(runs)
    ]
    k_lower, k_upper = bounds.bound_ranks(n, sigma, eps, alpha)
    s = sigma * float(model.w.detach().norm())
    expected = s * (_expected_normal_order_statistic(k_upper, n) - _expected_normal_order_statistic(k_lower, n))
    assert 0.97 * expected <= np.mean(widths) <= 1.03 * expected
