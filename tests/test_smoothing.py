"""SmoothedIQA: closed-form cases, invariants and every validation error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from torch import nn

from certiqa import SmoothedIQA, bounds


class Linear(nn.Module):
    """f(x) = w.x + b over all pixels."""

    def __init__(self, shape: tuple[int, int, int], seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(math.prod(shape), generator=g, dtype=torch.float64) * 0.2)
        self.b = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.b


class Constant(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), 4.2, dtype=x.dtype)


class MeanPixel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))


def _image(shape=(1, 3, 4, 4), seed=0, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _expected_normal_order_statistic(k: int, n: int) -> float:
    """E[Z_(k)] for n i.i.d. standard normals: Z_(k) = Phi^-1(U_(k)), U_(k) ~ Beta(k, n - k + 1)."""
    beta = stats.beta(k, n - k + 1)
    lo, hi = beta.ppf(1e-12), beta.ppf(1 - 1e-12)
    value, _ = integrate.quad(lambda u: stats.norm.ppf(u) * beta.pdf(u), lo, hi, limit=200)
    return value


def test_linear_model_closed_form_coverage_and_tightness():
    """f(x + G) ~ N(w.x + b, sigma^2 |w|^2): every h_0.5(x + delta) lies in mu -/+ eps |w|."""
    shape, n, sigma, eps, alpha, runs = (1, 4, 4), 500, 0.25, 0.1, 0.1, 200
    model = Linear(shape)
    x = _image((1,) + shape)
    with torch.no_grad():
        mu = float(model(x))
        w_norm = float(model.w.norm())
    true_lo, true_hi = mu - eps * w_norm, mu + eps * w_norm
    widths, failures = [], 0
    for seed in range(runs):
        res = SmoothedIQA(model, sigma, n=n, alpha=alpha, batch_size=250, clip=False, seed=seed).certify(x, eps)
        lower, upper = float(res.lower), float(res.upper)
        failures += not (lower <= true_lo and true_hi <= upper)
        widths.append(upper - lower)
    # coverage >= 1 - alpha, with a binomial tolerance (0.999 quantile of the failure count)
    assert failures <= stats.binom.ppf(0.999, runs, alpha), failures
    # tightness: the mean width matches the exact order-statistic expectation
    k_lower, k_upper = bounds.bound_ranks(n, sigma, eps, alpha)
    s = sigma * w_norm
    expected = s * (_expected_normal_order_statistic(k_upper, n) - _expected_normal_order_statistic(k_lower, n))
    assert np.mean(widths) <= 1.03 * expected
    assert np.mean(widths) >= 0.97 * expected


def test_linear_model_certified_radius_is_sound():
    shape, n, sigma, alpha, delta, runs = (1, 4, 4), 400, 0.25, 0.1, 0.1, 100
    model = Linear(shape, seed=1)
    x = _image((1,) + shape, seed=1)
    with torch.no_grad():
        mu, w_norm = float(model(x)), float(model.w.norm())
    failures = 0
    for seed in range(runs):
        smoothed = SmoothedIQA(model, sigma, n=n, alpha=alpha, clip=False, seed=seed)
        radius = float(smoothed.certified_radius(x, delta)[0])
        median = float(smoothed.predict(x)[0])
        assert radius > 0
        # worst case over ||d|| <= radius: the true smoothed median moves by radius * |w|
        failures += abs(mu - median) + radius * w_norm > delta
    assert failures <= stats.binom.ppf(0.999, runs, alpha)


def test_certified_radius_of_constant_model_is_set_by_the_dkw_band():
    n, sigma, alpha = 300, 0.2, 0.01
    radius = SmoothedIQA(Constant(), sigma, n=n, alpha=alpha, seed=0).certified_radius(_image(), 0.0)
    expected = sigma * stats.norm.ppf(1 - bounds.dkw_epsilon(n, alpha))
    assert radius.tolist() == pytest.approx([expected])


def test_certified_radius_grows_with_delta():
    smoothed = SmoothedIQA(Linear((3, 4, 4)), 0.2, n=300, alpha=0.01, seed=3)
    radii = [float(smoothed.certified_radius(_image(), d)[0]) for d in (0.0, 0.05, 0.2, 1.0)]
    assert radii == sorted(radii)
    assert radii[0] == 0.0 and radii[-1] > 0


def test_constant_model_gives_zero_width():
    res = SmoothedIQA(Constant(), 0.12, n=200, alpha=0.001, seed=0).certify(_image((2, 3, 8, 8)), 0.05)
    assert res.certified.all()
    assert torch.equal(res.width, torch.zeros(2, dtype=res.width.dtype))
    assert res.median.tolist() == pytest.approx([4.2, 4.2])


@settings(max_examples=20, deadline=None)
@given(scale=st.floats(0.1, 10.0), shift=st.floats(-50.0, 50.0), squash=st.booleans())
def test_increasing_transform_of_scores_transforms_bounds(scale, shift, squash):
    base = Linear((3, 4, 4))

    def transform(s: torch.Tensor) -> torch.Tensor:
        s = s * scale + shift
        return torch.tanh(s / 100.0) if squash else s

    x, eps = _image(), 0.05
    a = SmoothedIQA(base, 0.12, n=150, alpha=0.01, seed=7).certify(x, eps)
    b = SmoothedIQA(lambda z: transform(base(z)), 0.12, n=150, alpha=0.01, seed=7).certify(x, eps)
    for name in ("lower", "median", "upper"):
        torch.testing.assert_close(getattr(b, name), transform(getattr(a, name)))


def test_decreasing_transform_swaps_bounds():
    base, x = Linear((3, 4, 4)), _image()
    a = SmoothedIQA(base, 0.12, n=151, alpha=0.01, seed=2).certify(x, 0.05)
    b = SmoothedIQA(lambda z: -base(z), 0.12, n=151, alpha=0.01, seed=2).certify(x, 0.05)
    torch.testing.assert_close(b.lower, -a.upper)
    torch.testing.assert_close(b.upper, -a.lower)
    torch.testing.assert_close(b.median, -a.median)  # n odd: the median rank is its own mirror


def test_uncertifiable_sides_are_infinite_not_finite():
    res = SmoothedIQA(MeanPixel(), 0.12, n=5, alpha=0.001, seed=0).certify(_image(), 0.05)
    assert res.lower.item() == -math.inf and res.upper.item() == math.inf
    assert not res.certified.any()
    record = res.to_records()[0]
    assert record["certified"] is False and record["width"] == math.inf


def test_samples_are_sorted_and_images_are_not_mixed_up():
    """Chunks span several images; each image's samples must come from that image."""
    x = torch.stack([torch.full((3, 5, 5), v, dtype=torch.float64) for v in (0.2, 0.5, 0.8)])
    samples = SmoothedIQA(MeanPixel(), 1e-6, n=7, batch_size=4, seed=0).sample(x)
    assert samples.shape == (3, 7)
    assert torch.all(samples[:, 1:] >= samples[:, :-1])
    torch.testing.assert_close(samples, torch.tensor([[0.2], [0.5], [0.8]], dtype=torch.float64).expand(3, 7),
                               atol=1e-5, rtol=0)


class Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.drop = nn.Dropout(0.5)
        self.sizes: list[int] = []
        self.training_flags: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(x.shape[0])
        self.training_flags.append(self.training)
        return self.drop(x.mean(dim=(1, 2, 3)) * self.scale).unsqueeze(1)  # (B, 1) is accepted


def test_chunks_bounded_eval_mode_and_mode_restored():
    model = Recorder().train()
    samples = SmoothedIQA(model, 0.1, n=50, batch_size=16).sample(_image((3, 3, 6, 6), dtype=torch.float32))
    assert samples.shape == (3, 50)
    assert max(model.sizes) <= 16 and sum(model.sizes) == 150
    assert not any(model.training_flags)
    assert model.training and model.drop.training


def test_same_seed_same_result_and_fresh_noise_without_seed():
    x, model = _image(), Linear((3, 4, 4))
    a = SmoothedIQA(model, 0.1, n=64, seed=5).sample(x)
    b = SmoothedIQA(model, 0.1, n=64, seed=5).sample(x)
    c = SmoothedIQA(model, 0.1, n=64, seed=6).sample(x)
    unseeded = SmoothedIQA(model, 0.1, n=64)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(unseeded.sample(x), unseeded.sample(x))


def test_clip_keeps_noisy_images_in_unit_range():
    seen = []

    def model(z: torch.Tensor) -> torch.Tensor:
        seen.append((float(z.min()), float(z.max())))
        return z.mean(dim=(1, 2, 3))

    SmoothedIQA(model, 0.5, n=20, seed=0).sample(_image())
    assert min(lo for lo, _ in seen) >= 0.0 and max(hi for _, hi in seen) <= 1.0
    seen.clear()
    SmoothedIQA(model, 0.5, n=20, seed=0, clip=False).sample(_image())
    assert min(lo for lo, _ in seen) < 0.0 or max(hi for _, hi in seen) > 1.0


def test_median_is_the_ceil_half_order_statistic():
    smoothed = SmoothedIQA(Linear((3, 4, 4)), 0.1, n=10, seed=1)
    samples = smoothed.sample(_image())
    assert smoothed.predict(_image()).item() == samples[0, 4].item()
    assert smoothed(_image()).item() == samples[0, 4].item()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_noise_is_drawn_on_the_model_device():
    model = Linear((3, 4, 4)).cuda()
    res = SmoothedIQA(model, 0.1, n=100, seed=0).certify(_image(), 0.05)
    assert res.median.device.type == "cuda"
    again = SmoothedIQA(model, 0.1, n=100, seed=0).certify(_image().cuda(), 0.05)
    torch.testing.assert_close(res.median, again.median)


# --- every validation error path -------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"sigma": 0.0}, "sigma must be"),
        ({"sigma": -1.0}, "sigma must be"),
        ({"sigma": float("inf")}, "sigma must be"),
        ({"n": 0}, "n \\(the number of noise samples\\)"),
        ({"alpha": 0.0}, "alpha must lie"),
        ({"alpha": 1.5}, "alpha must lie"),
        ({"batch_size": 0}, "batch_size must be"),
    ],
)
def test_constructor_errors(kwargs, match):
    args = {"sigma": 0.1} | kwargs
    sigma = args.pop("sigma")
    with pytest.raises(ValueError, match=match):
        SmoothedIQA(MeanPixel(), sigma, **args)


def test_constructor_type_errors():
    with pytest.raises(TypeError, match="model must be"):
        SmoothedIQA("not a model", 0.1)
    with pytest.raises(TypeError, match="denoiser must be"):
        SmoothedIQA(MeanPixel(), 0.1, denoiser=3)
    with pytest.raises(TypeError, match="seed must be"):
        SmoothedIQA(MeanPixel(), 0.1, seed=1.5)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        SmoothedIQA(MeanPixel(), 0.1, seed=-1)


@pytest.mark.parametrize(
    "x, error, match",
    [
        (np.zeros((1, 3, 4, 4)), TypeError, "must be a torch.Tensor"),
        (torch.zeros((1, 3, 4, 4), dtype=torch.uint8), TypeError, "floating tensor"),
        (torch.zeros((3, 4, 4)), ValueError, "shape \\(B, C, H, W\\)"),
        (torch.zeros((0, 3, 4, 4)), ValueError, "empty"),
        (torch.full((1, 3, 4, 4), float("nan")), ValueError, "non-finite pixel"),
        (torch.full((1, 3, 4, 4), 1.5), ValueError, "pixels in \\[0, 1\\]"),
        (torch.full((1, 3, 4, 4), -0.1), ValueError, "pixels in \\[0, 1\\]"),
    ],
)
def test_input_errors(x, error, match):
    with pytest.raises(error, match=match):
        SmoothedIQA(MeanPixel(), 0.1, n=4).certify(x, 0.1)


def test_eps_and_delta_errors():
    smoothed = SmoothedIQA(MeanPixel(), 0.1, n=4)
    with pytest.raises(ValueError, match="eps must be"):
        smoothed.certify(_image(), -0.01)
    with pytest.raises(ValueError, match="delta must be"):
        smoothed.certified_radius(_image(), -1.0)
    with pytest.raises(ValueError, match="n \\(the number"):
        smoothed.sample(_image(), 0)


def test_model_output_errors_name_what_came():
    x = _image((2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"shape \(B,\) or \(B, 1\); for B = \d+ it returned shape \(\d+, 2\)"):
        SmoothedIQA(lambda z: torch.zeros(z.shape[0], 2), 0.1, n=4).sample(x)
    with pytest.raises(TypeError, match="must return a torch.Tensor"):
        SmoothedIQA(lambda z: [0.0] * z.shape[0], 0.1, n=4).sample(x)

    def nan_for_second_image(z: torch.Tensor) -> torch.Tensor:
        scores = z.mean(dim=(1, 2, 3))
        return torch.where(z[:, 0, 0, 0] > 0.5, torch.nan, scores)

    y = torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)]).double()
    with pytest.raises(ValueError, match="non-finite score .* image index 1"):
        SmoothedIQA(nan_for_second_image, 1e-6, n=4).sample(y)
