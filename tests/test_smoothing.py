"""SmoothedIQA: closed-form cases, invariants and every validation error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from torch import nn

from certiqa import SmoothedIQA, bounds, certified_radius_samples, certify_samples

from conftest import Linear


class Constant(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), 4.2, dtype=x.dtype)


class MeanPixel(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3))


def _image(shape=(1, 3, 4, 4), seed=0, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


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


# --- exact order statistics, pinned ----------------------------------------------------------


@pytest.mark.parametrize("n, sigma, eps, alpha", [(200, 0.25, 0.05, 0.001), (1000, 0.12, 0.1, 0.01), (57, 0.5, 0.2, 0.1)])
def test_certify_samples_reads_exactly_the_ranks_bound_ranks_names(n, sigma, eps, alpha):
    """On samples 0, 1, ..., n - 1 the value at 1-based rank k is k - 1: reading one rank
    inward or outward on either side changes the result."""
    samples = torch.stack([torch.arange(n, dtype=torch.float64), 10.0 * torch.arange(n, dtype=torch.float64)])
    k_lower, k_upper = bounds.bound_ranks(n, sigma, eps, alpha)
    assert k_lower is not None and k_upper is not None
    res = certify_samples(samples, eps, sigma, alpha)
    assert res.lower.tolist() == [k_lower - 1, 10.0 * (k_lower - 1)]
    assert res.upper.tolist() == [k_upper - 1, 10.0 * (k_upper - 1)]
    assert res.median.tolist() == [math.ceil(n / 2) - 1, 10.0 * (math.ceil(n / 2) - 1)]
    assert res.certified.all()


def test_certify_samples_promotes_integer_scores_to_float64():
    samples = torch.arange(300).reshape(1, 300)
    res = certify_samples(samples, 0.05, 0.25, 0.01)
    assert res.lower.dtype == res.upper.dtype == res.median.dtype == torch.float64
    floats = certify_samples(samples.double(), 0.05, 0.25, 0.01)
    assert (res.lower, res.upper) == (floats.lower, floats.upper)
    # and a model that returns integer scores certifies like its float twin
    ints = SmoothedIQA(lambda z: (z.mean(dim=(1, 2, 3)) * 100).floor().long(), 0.1, n=50, seed=0).certify(_image(), 0.05)
    floored = SmoothedIQA(lambda z: (z.mean(dim=(1, 2, 3)) * 100).floor(), 0.1, n=50, seed=0).certify(_image(), 0.05)
    assert ints.lower.dtype == torch.float64 and torch.equal(ints.lower, floored.lower.double())


@pytest.mark.parametrize(
    "samples, error, match",
    [
        (torch.tensor([[1.0, 3.0, 2.0]]), ValueError, r"sorted ascending.*row 0 has 3.0 before 2.0"),
        (torch.tensor([[0.0, 1.0], [5.0, 4.0]]), ValueError, r"row 1 has 5.0 before 4.0"),
        (torch.tensor([[0.0, float("nan"), 1.0]]), ValueError, r"finite; row 0 has nan at position 1"),
        (torch.tensor([[0.0, 1.0, float("inf")]]), ValueError, r"finite; row 0 has inf"),
        (torch.zeros(5), ValueError, r"shape \(B, n\)"),
        (torch.zeros((1, 0)), ValueError, r"shape \(B, n\)"),
        (torch.zeros((1, 3), dtype=torch.bool), TypeError, "real scores"),
        ([[0.0, 1.0]], TypeError, "must be a torch.Tensor"),
    ],
)
def test_certify_samples_refuses_what_would_give_a_wrong_certificate(samples, error, match):
    with pytest.raises(error, match=match):
        certify_samples(samples, 0.05, 0.25, 0.01)
    with pytest.raises(error, match=match):
        certified_radius_samples(samples, 1.0, 0.25, 0.01)


def test_certify_samples_eps_error():
    with pytest.raises(ValueError, match="eps must be"):
        certify_samples(torch.zeros((1, 3)), -0.1, 0.25, 0.01)


def _dkw_radius_by_hand(n: int, k_min: int, k_max: int, sigma: float, alpha: float) -> float:
    band = math.sqrt(math.log(2 / alpha) / (2 * n))
    return sigma * min(-stats.norm.ppf((k_min - 1) / n + band), stats.norm.ppf(k_max / n - band))


def test_certified_radius_samples_pinned_on_hand_built_ties():
    """Values 0..9, each 20 times (n = 200): the median y_(100) is 4 (ranks 81-100 hold 4,
    rank 101 holds 5). Row 0, delta 2: inside [2, 6] = ranks 41..140 (the upper side binds).
    Row 1 is row 0 with the two top blocks raised far away and delta 1.5: inside [3, 5] is
    ranks 61..120 (symmetric about rank 100.5 only approximately)."""
    n, sigma, alpha = 200, 0.3, 0.05
    row0 = torch.arange(10, dtype=torch.float64).repeat_interleave(20)
    samples = row0[None]
    radius = certified_radius_samples(samples, 2.0, sigma, alpha)
    assert radius.tolist() == pytest.approx([_dkw_radius_by_hand(n, 41, 140, sigma, alpha)], rel=1e-12)
    assert radius.tolist() == pytest.approx([bounds.dkw_radius(n, 41, 140, sigma, alpha)], rel=1e-12)
    # the pin is sharp: k_max off by one moves it
    for k_min, k_max in ((41, 139), (41, 141)):
        assert abs(_dkw_radius_by_hand(n, k_min, k_max, sigma, alpha) - float(radius[0])) > 1e-4
    # the lower side binds when the upper block is far above
    delta = 1.5
    row1 = torch.cat([torch.arange(8, dtype=torch.float64).repeat_interleave(20),
                      torch.full((40,), 50.0, dtype=torch.float64)])
    both = certified_radius_samples(torch.stack([row0, row1]), delta, sigma, alpha)
    assert both.tolist() == pytest.approx(
        [_dkw_radius_by_hand(n, 61, 120, sigma, alpha), _dkw_radius_by_hand(n, 61, 120, sigma, alpha)], rel=1e-12)
    lopsided = torch.cat([torch.zeros(61, dtype=torch.float64), torch.full((139,), 4.0, dtype=torch.float64)])
    # median y_(100) = 4; inside [2.5, 5.5] = ranks 62..200: the lower side binds, and
    # k_min off by one (61 or 63) would move the radius
    lopsided_radius = float(certified_radius_samples(lopsided[None], 1.5, sigma, alpha)[0])
    assert lopsided_radius == pytest.approx(sigma * -stats.norm.ppf(61 / n + math.sqrt(math.log(2 / alpha) / (2 * n))),
                                            rel=1e-12)
    for k_min in (61, 63):
        assert abs(_dkw_radius_by_hand(n, k_min, 200, sigma, alpha) - lopsided_radius) > 1e-4


def test_certified_radius_is_centred_on_the_reported_median():
    """Blocks 0 x 50, 3 x 5, 4 x 45, 5 x 40, 6 x 20, 9 x 40 (n = 200): the reported median
    y_(100) is 4 (y_(101) is 5). delta 1 around 4 keeps ranks 51..140; around 5 it would
    keep ranks 56..160, a different radius."""
    n, sigma, alpha = 200, 0.3, 0.05
    values = [(0.0, 50), (3.0, 5), (4.0, 45), (5.0, 40), (6.0, 20), (9.0, 40)]
    row = torch.cat([torch.full((k,), v, dtype=torch.float64) for v, k in values])
    assert float(certify_samples(row[None], 0.0, sigma, alpha).median[0]) == 4.0
    radius = float(certified_radius_samples(row[None], 1.0, sigma, alpha)[0])
    assert radius == pytest.approx(_dkw_radius_by_hand(n, 51, 140, sigma, alpha), rel=1e-12)
    assert abs(radius - _dkw_radius_by_hand(n, 56, 160, sigma, alpha)) > 1e-3


def test_certified_radius_samples_compares_exactly_not_in_the_score_dtype():
    """bfloat16 scores 89.0 / 89.5 / 90.0, median 89.5, delta 0.3: only the 89.5 block
    (ranks 61..140) is within delta. In bf16, 89.5 - 0.3 rounds to 89.0 and 89.5 + 0.3
    to 90.0, which would count all 200 samples as inside."""
    n, sigma, alpha = 200, 0.25, 0.05
    row = torch.tensor([89.0] * 60 + [89.5] * 80 + [90.0] * 60, dtype=torch.bfloat16)
    assert float((row[100] - torch.tensor(0.3, dtype=torch.bfloat16))) == 89.0  # the trap
    expected = _dkw_radius_by_hand(n, 61, 140, sigma, alpha)
    assert certified_radius_samples(row[None], 0.3, sigma, alpha).tolist() == pytest.approx([expected], rel=1e-12)
    # a sample exactly delta away is inside; one float64 ulp farther is not
    # (1.0 + the float below 0.25 rounds to 1.25 in float64: the exact comparison matters)
    edge = torch.tensor([[0.0] * 40 + [1.0] * 110 + [1.25] * 50], dtype=torch.float64)  # median y_(100) = 1.0
    inside = _dkw_radius_by_hand(n, 41, 200, sigma, alpha)
    outside = _dkw_radius_by_hand(n, 41, 150, sigma, alpha)
    assert abs(inside - outside) > 1e-3
    assert certified_radius_samples(edge, 0.25, sigma, alpha).tolist() == pytest.approx([inside], rel=1e-12)
    assert certified_radius_samples(edge, math.nextafter(0.25, 0.0), sigma, alpha).tolist() == pytest.approx(
        [outside], rel=1e-12)


def test_half_precision_input_gets_float32_noise_then_is_cast():
    """The noise of a float16 / bfloat16 image is drawn in float32 and added in float32;
    only the noisy, clipped image is rounded to the input dtype."""
    from certiqa.noise import GaussianStreams

    for dtype in (torch.float16, torch.bfloat16):
        x = _image((1, 3, 4, 4), dtype=torch.float32).to(dtype)
        seen = []

        def model(z: torch.Tensor) -> torch.Tensor:
            seen.append(z.clone())
            return z.float().mean(dim=(1, 2, 3))

        samples = SmoothedIQA(model, 0.1, n=6, batch_size=6, seed=4).sample(x)
        assert samples.dtype == torch.float64 and seen[0].dtype == dtype
        with GaussianStreams(4, "cpu") as streams:
            noise = streams.normal_(torch.empty((6, 3, 4, 4)), 0.1)
        expected = (noise + x.float()).clamp(0, 1).to(dtype)
        assert torch.equal(seen[0], expected)
