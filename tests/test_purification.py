"""Purification defenses: shape, dtype, device and range; determinism and seeds; closed
forms; BPDA and EOT through the Purified wrapper; errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from certiqa.defenses import (
    JPEG,
    BitDepth,
    ExpectedPurifiedScore,
    GaussianBlur,
    MedianFilter,
    Purified,
    RandomResizePad,
    RandomRotation,
    ResizeDownUp,
    bpda,
    default_purifications,
)
from certiqa.models import CNNIQA

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
ALL = [type(d) for d in default_purifications()]


class Linear(nn.Module):
    """f(x) = <w, x> per image, for (B, 3, 40, 44) images: the input gradient is w."""

    lower_better = True
    score_range = (0.0, 100.0)
    min_size = 7

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn((3, 40, 44), generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.w.to(x.dtype)).flatten(1).sum(dim=1)


def _images(dtype: torch.dtype = torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand((2, 3, 40, 44), generator=gen, dtype=dtype)
    x[:, :, :4] = 1.0  # saturated pixels exercise the clamp
    x[:, :, -4:] = 0.0
    return x


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls", ALL)
def test_keeps_shape_dtype_device_and_range(cls, dtype, device):
    x = _images(dtype).to(device)
    y = (cls(seed=1) if cls.random else cls())(x)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert not torch.equal(y, x)  # every default setting changes this image


@settings(max_examples=12, deadline=None)
@given(height=st.integers(8, 48), width=st.integers(8, 48), batch=st.integers(1, 2), seed=st.integers(0, 2**31))
@pytest.mark.parametrize("cls", ALL)
def test_any_size_stays_in_shape_and_range(cls, height, width, batch, seed):
    x = torch.rand((batch, 3, height, width), generator=torch.Generator().manual_seed(seed))
    y = cls(seed=seed)(x) if cls.random else cls()(x)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1 and torch.isfinite(y).all()


@pytest.mark.parametrize("cls", ALL)
def test_deterministic_or_reproducible(cls):
    x = _images()
    if not cls.random:
        defense = cls()
        assert torch.equal(defense(x), defense(x))
        return
    a, b, other = cls(seed=3), cls(seed=3), cls(seed=4)
    first = a(x)
    assert torch.equal(first, b(x))  # same seed, same draws
    assert not torch.equal(first, other(x))
    assert not torch.equal(first, a(x))  # the stream moves on
    a.manual_seed(3)
    assert torch.equal(first, a(x))  # and restarts
    assert not torch.equal(a(x[:1]), a(x[:1]))  # one draw per image


@pytest.mark.parametrize("cls", ALL)
def test_constant_image_stays_constant(cls):
    x = torch.full((1, 3, 40, 44), 0.4)
    # 5 bits: 0.4 * 31 = 12.4 -> 12 / 31; JPEG codes a flat block exactly up to its DC rounding
    tolerance = {BitDepth: 0.4 - 12 / 31 + 1e-6, JPEG: 1 / 255}.get(cls, 1e-5)
    assert float((cls()(x) - x).abs().max()) <= tolerance


def test_closed_forms():
    x = torch.tensor([0.0, 0.2, 0.5, 1.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    # 2 bits: 3 levels of 1/3; 0.5 * 3 = 1.5 rounds to the even level 2
    assert torch.allclose(BitDepth(2)(x)[0, 0, 0], torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))
    salt = torch.full((1, 3, 40, 44), 0.3)
    salt[..., 20, 20] = 1.0
    assert torch.equal(MedianFilter(3)(salt), torch.full_like(salt, 0.3))  # an isolated pixel is removed
    blurred = GaussianBlur(1.0)(salt)
    assert float(blurred[..., 20, 20].max()) < 0.5 and float(blurred.sum() - salt.sum()) == pytest.approx(0, abs=1e-3)
    ramp = torch.linspace(0, 1, 44).view(1, 1, 1, 44).expand(1, 3, 40, 44)
    assert float((ResizeDownUp(0.5)(ramp) - ramp)[..., 4:-4].abs().max()) < 0.02  # smooth content survives
    noisy = (ramp + 0.05 * torch.randn(ramp.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    err = [float((JPEG(q)(noisy) - noisy).abs().mean()) for q in (95, 75, 25)]
    assert err[0] < err[1] < err[2]  # lower quality, larger change


def test_bpda_gradient_is_the_models_gradient_at_the_purified_image():
    model = Linear()
    x = _images().requires_grad_(True)
    w = model.w.detach().expand(2, -1, -1, -1)
    for defense in (BitDepth(5), MedianFilter(3), JPEG(75)):
        purified = Purified(model, defense, bpda=True)
        (grad,) = torch.autograd.grad(purified(x).sum(), x)
        assert torch.allclose(grad, w)  # identity backward: d<w, D(x)>/dx := w
        assert torch.allclose(purified(x), model(defense(x.detach())))  # the forward value is the defense's
    # without BPDA, rounding has no gradient: this is what BPDA works around
    (exact,) = torch.autograd.grad(Purified(model, BitDepth(5), bpda=False)(x).sum(), x)
    assert float(exact.abs().max()) == 0


def test_bpda_is_automatic_for_non_differentiable_defenses():
    torch.manual_seed(0)
    model = CNNIQA(kernels=4, hidden=16).eval()
    x = _images()
    for defense in default_purifications():
        purified = Purified(model, defense)
        assert purified.bpda is (not defense.differentiable)
        xg = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(purified(xg).sum(), xg)
        assert float(grad.abs().sum()) > 0, defense.label  # gradients flow through every defense
    assert [d.label for d in default_purifications() if not d.differentiable] == ["median 3x3", "5-bit depth"]
    bits = Purified(model, BitDepth(5))
    assert (bits.lower_better, bits.score_range, bits.min_size) == (True, (0.0, 100.0), 33)


def test_bpda_function_on_its_own():
    x = torch.rand(2, 3, 5, 5, requires_grad=True)
    y = bpda(lambda z: torch.round(z * 3) / 3, x)
    assert torch.equal(y, torch.round(x.detach() * 3) / 3)
    (grad,) = torch.autograd.grad((y * 2).sum(), x)
    assert torch.equal(grad, torch.full_like(x, 2.0))


def test_expected_purified_score():
    torch.manual_seed(0)
    model = CNNIQA(kernels=4, hidden=16).eval()
    x = _images()
    with torch.no_grad():
        blur = Purified(model, GaussianBlur(1.0))
        assert torch.allclose(ExpectedPurifiedScore(blur, 3)(x), blur(x))  # deterministic: every draw is the same
        rotation = Purified(model, RandomRotation(20, seed=5))
        eot = ExpectedPurifiedScore(rotation, 16)
        rotation.defense.manual_seed(5)
        scores = eot(x)
        rotation.defense.manual_seed(5)
        seen = rotation.defense(x.repeat_interleave(16, dim=0))
    assert scores.shape == (2,) and eot.lower_better is True and eot.score_range == (0.0, 100.0)
    assert len({float(s.sum()) for s in seen}) == 32  # an independent draw for every copy
    with torch.no_grad():
        assert torch.allclose(scores, model(seen).view(2, 16).mean(dim=1))


def test_random_resize_pad_at_the_smallest_scale():
    # at scale 0.5 every reflected pad must stay shorter than the resized side, even on tiny images
    for shape in ((1, 3, 4, 6), (3, 3, 40, 44)):
        x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
        defense = RandomResizePad(0.5, seed=1)
        for _ in range(5):
            assert defense(x).shape == x.shape


def test_errors():
    with pytest.raises(ValueError, match="quality"):
        JPEG(0)
    with pytest.raises(ValueError, match=r"\(0, 100\]"):
        JPEG(101)
    with pytest.raises(ValueError, match="odd"):
        MedianFilter(4)
    with pytest.raises(ValueError, match="downscale"):
        ResizeDownUp(1.5)
    with pytest.raises(ValueError, match="bits"):
        BitDepth(0)
    with pytest.raises(ValueError, match="min_scale"):
        RandomResizePad(0.3)
    with pytest.raises(ValueError, match="max_degrees"):
        RandomRotation(-1)
    with pytest.raises(ValueError, match="seed"):
        RandomRotation(seed=-1)
    with pytest.raises(TypeError, match="Purification"):
        Purified(Linear(), lambda z: z)
    with pytest.raises(TypeError, match="callable"):
        Purified("model", BitDepth())
    with pytest.raises(TypeError, match="Purified"):
        ExpectedPurifiedScore(Linear())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        BitDepth()(torch.full((1, 3, 8, 8), 2.0))
    with pytest.raises(ValueError, match="1 or 3 channels"):
        JPEG()(torch.rand(1, 2, 16, 16))
    assert math.isclose(JPEG(75).quality, 75.0)
