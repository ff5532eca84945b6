"""Graded synthetic distortions: shapes, range, determinism, monotone severity, errors."""

from __future__ import annotations

import math

import pytest
import torch

from certiqa import distortions as D
from certiqa.distortions import DISTORTIONS, LEVELS, PARAMETERS, distort

RANDOM = {"gaussian_noise", "motion_blur"}


def _photo_like(batch: int = 2, height: int = 48, width: int = 64, seed: int = 0) -> torch.Tensor:
    """A smooth colour scene plus edges and mild texture, in [0.05, 0.95]: structured like a photo."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    base = torch.stack(
        (
            0.5 + 0.3 * torch.sin(6 * xx + 2 * yy),
            0.5 + 0.3 * torch.cos(5 * yy - 3 * xx),
            0.4 + 0.3 * (xx > 0.5).float() * (yy < 0.6).float(),
        )
    )
    texture = torch.rand((batch, 3, height, width), generator=gen) * 0.1
    return (base.unsqueeze(0) + texture - 0.05).clamp(0.05, 0.95)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return _photo_like()


def test_registry_has_the_nine_distortions() -> None:
    assert set(DISTORTIONS) == {
        "gaussian_blur", "motion_blur", "gaussian_noise", "jpeg", "contrast",
        "brightness", "saturation", "pixelate", "quantize",
    }
    assert set(PARAMETERS) == set(DISTORTIONS)
    assert all(len(p) == len(LEVELS) for p in PARAMETERS.values())


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_shape_dtype_range_and_change(name: str, images: torch.Tensor) -> None:
    for level in LEVELS:
        out = distort(images, name, level, generator=0)
        assert out.shape == images.shape and out.dtype == images.dtype
        assert torch.isfinite(out).all()
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert not torch.equal(out, images)


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_odd_sizes_and_float64(name: str) -> None:
    x = _photo_like(1, 37, 53).double()
    out = distort(x, name, 3, generator=1)
    assert out.shape == x.shape and out.dtype == torch.float64


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_deterministic_given_a_seed_or_generator(name: str, images: torch.Tensor) -> None:
    a = distort(images, name, 4, generator=torch.Generator().manual_seed(7))
    b = distort(images, name, 4, generator=7)
    assert torch.equal(a, b)
    c = distort(images, name, 4, generator=8)
    assert torch.equal(a, c) == (name not in RANDOM)


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_error_to_the_clean_image_grows_with_level(name: str, images: torch.Tensor) -> None:
    errors = [float(((distort(images, name, level, generator=3) - images) ** 2).mean()) for level in LEVELS]
    assert all(a < b for a, b in zip(errors, errors[1:])), errors


def test_noise_std_matches_the_level() -> None:
    x = torch.full((1, 3, 64, 64), 0.5)  # far from the clamp for std <= 0.18 (2.8 sigma)
    for level, std in zip(LEVELS, PARAMETERS["gaussian_noise"]):
        residual = distort(x, "gaussian_noise", level, generator=level) - x
        assert abs(float(residual.std()) - std) < 0.1 * std
        assert abs(float(residual.mean())) < 0.01


def test_quantize_closed_form() -> None:
    x = torch.linspace(0, 1, 3 * 8 * 8).reshape(1, 3, 8, 8)
    for level, bits in zip(LEVELS, PARAMETERS["quantize"]):
        out = distort(x, "quantize", level)
        steps = 2**bits - 1
        assert len(torch.unique(out)) <= steps + 1
        assert torch.allclose(out * steps, torch.round(out * steps), atol=1e-5)
        assert float((out - x).abs().max()) <= 0.5 / steps + 1e-6


def test_brightness_is_a_clamped_shift() -> None:
    x = _photo_like(1)
    for level, shift in zip(LEVELS, PARAMETERS["brightness"]):
        assert torch.allclose(distort(x, "brightness", level), (x - shift).clamp_min(0.0), atol=1e-6)


def test_pixelate_is_blockwise_constant() -> None:
    x = _photo_like(1, 48, 48)
    for level, factor in zip(LEVELS, PARAMETERS["pixelate"]):
        out = distort(x, "pixelate", level)
        f = int(factor)
        if 48 % f == 0:
            blocks = out.reshape(1, 3, 48 // f, f, 48 // f, f)
            assert torch.allclose(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks))
            means = x.reshape(1, 3, 48 // f, f, 48 // f, f).mean(dim=(3, 5))
            assert torch.allclose(blocks[:, :, :, 0, :, 0], means, atol=1e-6)


def test_saturation_level5_is_gray_and_contrast_keeps_the_mean() -> None:
    x = _photo_like(1)
    gray = distort(x, "saturation", 5)
    assert torch.allclose(gray[:, 0], gray[:, 1], atol=1e-5) and torch.allclose(gray[:, 1], gray[:, 2], atol=1e-5)
    low = distort(x, "contrast", 5)
    assert float(low.std()) < float(x.std())
    assert math.isclose(float(low.mean()), float(x.mean()), abs_tol=0.02)


def test_blur_preserves_a_constant_image() -> None:
    x = torch.full((1, 3, 40, 40), 0.3)
    for name in ("gaussian_blur", "motion_blur", "pixelate"):
        assert torch.allclose(distort(x, name, 5, generator=0), x, atol=1e-5)


def test_functions_match_the_registry(images: torch.Tensor) -> None:
    assert torch.equal(D.jpeg(images, 2), distort(images, "jpeg", 2))
    assert torch.equal(D.gaussian_noise(images, 2, generator=5), distort(images, "gaussian_noise", 2, generator=5))


@pytest.mark.parametrize("level", [0, 6, 2.0, True, "3", None])
def test_bad_level(level, images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="level must be an integer in 1..5"):
        distort(images, "jpeg", level)


def test_bad_name(images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="unknown distortion 'blur'.*gaussian_blur"):
        distort(images, "blur", 1)


def test_bad_generator(images: torch.Tensor) -> None:
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        distort(images, "gaussian_noise", 1, generator=1.5)


@pytest.mark.parametrize(
    "x, error, match",
    [
        (torch.rand(1, 1, 16, 16), ValueError, r"RGB images of shape \(B, 3, H, W\)"),
        (torch.rand(3, 16, 16), ValueError, r"shape \(B, C, H, W\)"),
        (torch.rand(1, 3, 16, 16) * 2, ValueError, r"\[0, 1\]"),
        (torch.full((1, 3, 16, 16), float("nan")), ValueError, "non-finite"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), TypeError, "floating"),
        ([[0.0]], TypeError, "torch.Tensor"),
    ],
)
@pytest.mark.parametrize("name", ["jpeg", "gaussian_noise"])
def test_bad_input(x, error, match, name: str) -> None:
    with pytest.raises(error, match=match):
        distort(x, name, 1)


@pytest.mark.parametrize("name", sorted(DISTORTIONS))
def test_distort_with_the_level_parameter_equals_distort(name: str, images: torch.Tensor) -> None:
    for level in (1, 5):
        expected = distort(images, name, level, generator=3)
        assert torch.equal(D.distort_with(images, name, PARAMETERS[name][level - 1], generator=3), expected)


def test_distort_with_between_levels_is_between() -> None:
    x = _photo_like()
    errors = [float((D.distort_with(x, "gaussian_blur", s) - x).pow(2).mean()) for s in (0.8, 1.1, 1.5)]
    assert errors[0] < errors[1] < errors[2]
    assert torch.equal(D.distort_with(x, "gaussian_noise", 0.0), x)  # std 0: unchanged


@pytest.mark.parametrize(
    "name, parameter, match",
    [
        ("motion_blur", 4, "odd kernel length >= 3"),
        ("jpeg", 0.5, "JPEG quality in \\[1, 100\\]"),
        ("gaussian_noise", -0.1, "noise std >= 0"),
        ("gaussian_blur", 0.0, "blur sigma in \\(0, 20\\] pixels"),
        ("pixelate", 2.5, "integer down-sampling factor"),
        ("quantize", True, "integer number of bits"),
        ("contrast", math.nan, "contrast factor in \\[0, 1\\]"),
    ],
)
def test_distort_with_bad_parameter(name: str, parameter, match: str) -> None:
    with pytest.raises(ValueError, match=f"the {name} parameter must be an? {match}.*, got"):
        D.distort_with(_photo_like(), name, parameter)


def test_distort_with_bad_name() -> None:
    with pytest.raises(ValueError, match="unknown distortion 'fog'"):
        D.distort_with(_photo_like(), "fog", 1.0)
