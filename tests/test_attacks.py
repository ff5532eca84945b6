"""Attacks: budgets, [0, 1], direction of the score change, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from certiqa import SmoothedIQA
from certiqa.attacks import (
    FGSM,
    IFGSM,
    MIFGSM,
    PGD,
    PGDL2,
    ExpectedScore,
    Korhonen,
    SmoothedPGDL2,
    harrell_davis_weights,
    make_attack,
    sobel_activity,
)
from certiqa.io import load_image
from certiqa.models import CNNIQA

LINF = [FGSM, IFGSM, MIFGSM, PGD, Korhonen]
ALL = LINF + [PGDL2]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(scope="module")
def tiny() -> CNNIQA:
    torch.manual_seed(0)
    return CNNIQA(kernels=4, hidden=16).eval()


@pytest.fixture(scope="module")
def real_crop(shared_data) -> torch.Tensor:
    image = load_image(shared_data / "images" / "labelled" / "clive_1000.jpg", resize=80)
    return image[None, :, :66, :66].contiguous()


def _kwargs(cls) -> dict:
    return {} if cls is FGSM else {"steps": 3}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cls", ALL)
def test_budget_and_unit_range(cls, device, tiny):
    model = tiny.to(device)
    gen = torch.Generator().manual_seed(1)
    # include saturated pixels so the [0, 1] clamp is exercised
    x = torch.rand((2, 3, 40, 40), generator=gen).round().mul(0.5).add(torch.rand((2, 3, 40, 40), generator=gen) * 0.5)
    x[:, :, :5] = 1.0
    x[:, :, -5:] = 0.0
    x = x.to(device)
    eps = 0.3 if cls is PGDL2 else 8 / 255
    x_adv = cls(model, eps, direction="up", seed=0, **_kwargs(cls))(x)
    assert x_adv.shape == x.shape and x_adv.device == x.device
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = (x_adv - x).flatten(1)
    if cls is PGDL2:
        assert (delta.norm(dim=1) <= eps * (1 + 1e-5)).all()
    else:
        assert delta.abs().max() <= eps + 1e-6
    assert delta.abs().max() > 0
    assert all(p.grad is None for p in model.parameters())
    model.cpu()


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("direction", ["up", "down"])
def test_moves_the_cnniqa_score_as_asked(cls, direction, cnniqa_live, real_crop):
    with torch.no_grad():
        clean = float(cnniqa_live(real_crop))
    eps = 0.25 if cls is PGDL2 else 2 / 255
    x_adv = cls(cnniqa_live, eps, direction=direction, seed=0, **_kwargs(cls))(real_crop)
    with torch.no_grad():
        attacked = float(cnniqa_live(x_adv))
    assert (attacked - clean > 0.5) if direction == "up" else (clean - attacked > 0.5)


def test_better_worse_and_away_follow_lower_better(tiny):
    x = torch.full((1, 3, 40, 40), 0.5)
    up = torch.ones(1)
    assert torch.equal(IFGSM(tiny, 0.01, direction="worse", lower_better=True).signs(up), up)
    assert torch.equal(IFGSM(tiny, 0.01, direction="better", lower_better=True).signs(up), -up)
    assert torch.equal(IFGSM(tiny, 0.01, direction="better", lower_better=False).signs(up), up)
    away = IFGSM(tiny, 0.01, direction="away", score_range=(0, 100))
    assert away.signs(torch.tensor([10.0, 90.0, 50.0])).tolist() == [1.0, -1.0, 1.0]
    assert IFGSM(tiny, 0.0)(x).equal(x)


def test_korhonen_leaves_flat_regions_alone(cnniqa_live, real_crop):
    x = real_crop.clone()
    x[..., :, :30] = 0.4  # flat left part: Sobel activity 0 away from its edge
    x_adv = Korhonen(cnniqa_live, 8 / 255, steps=3, direction="up")(x)
    assert (x_adv - x)[..., :, :28].abs().max() == 0
    assert (x_adv - x)[..., :, 33:].abs().max() > 0
    mask = sobel_activity(x)
    assert mask.shape == (1, 1, 66, 66) and float(mask.max()) == pytest.approx(1.0)


def test_mifgsm_momentum_accumulates(tiny):
    attack = MIFGSM(tiny, 0.03, steps=2, decay=0.5)
    state: dict = {}
    g = torch.ones(1, 3, 2, 2)
    attack.transform_grad(g, state)
    assert torch.allclose(attack.transform_grad(2 * g, state), torch.full_like(g, 1.5))


def test_smoothed_pgdl2_is_adaptive_and_in_budget(tiny):
    smoothed = SmoothedIQA(tiny, 0.1, n=64, seed=0, denoiser=nn.AvgPool2d(3, 1, 1))
    x = torch.rand((1, 3, 40, 40), generator=torch.Generator().manual_seed(2))
    surrogate = ExpectedScore(smoothed, samples=16, seed=3)
    x_adv = SmoothedPGDL2(smoothed, 0.5, steps=5, samples=4, direction="up", seed=0)(x)
    assert float((x_adv - x).norm()) <= 0.5 * (1 + 1e-5) and x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        assert float(surrogate(x_adv)) > float(surrogate(x))
    assert float(smoothed(x_adv)) > float(smoothed(x))


def test_errors(tiny):
    x = torch.rand(1, 3, 40, 40)
    with pytest.raises(ValueError, match="direction must be one of"):
        PGD(tiny, 0.1, direction="sideways")
    with pytest.raises(ValueError, match="lower_better"):
        PGD(lambda z: z.mean((1, 2, 3)), 0.1, direction="better")
    with pytest.raises(ValueError, match="score_range"):
        PGD(lambda z: z.mean((1, 2, 3)), 0.1, direction="away")
    with pytest.raises(ValueError, match="one step"):
        FGSM(tiny, 0.1, steps=3)
    with pytest.raises(ValueError, match="eps must be"):
        PGD(tiny, -0.1)
    with pytest.raises(TypeError, match="callable"):
        PGD("model", 0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        PGD(tiny, 0.1)(x * 2)
    with pytest.raises(ValueError, match="unknown attack"):
        make_attack("CW", tiny, 0.1)
    with pytest.raises(TypeError, match="SmoothedIQA"):
        ExpectedScore(tiny)
    with pytest.raises(ValueError, match="shape"):
        PGD(lambda z: z.mean(), 0.1, direction="up")(x)


# --- the adaptive attack on smoothed medians -------------------------------------------------


@pytest.mark.parametrize("k, q", [(2, 0.5), (7, 0.5), (32, 0.5), (101, 0.2), (256, 0.9)])
def test_harrell_davis_weights_match_scipy(k, q):
    from scipy.stats.mstats import hdquantiles

    data = np.sort(np.random.default_rng(k).standard_normal(k))
    weights = harrell_davis_weights(k, q).numpy()
    assert weights.min() >= 0 and weights.sum() == pytest.approx(1.0)
    assert float(weights @ data) == pytest.approx(float(hdquantiles(data, prob=[q])[0]), rel=1e-9, abs=1e-12)
    if q == 0.5:
        np.testing.assert_allclose(weights, weights[::-1], atol=1e-15)


class Planted(nn.Module):
    """f(z) = w.z + c sum_i cos(omega z_i), |w| = 1: under N(0, 0.12^2) noise the cosines
    average to cos(omega z) exp(-omega^2 sigma^2 / 2) ~ 1e-5 of their size, so the smoothed
    median moves by exactly w.delta, at most eps along w. The cosines make every single
    gradient point elsewhere (c omega = 0.5 per pixel against |w_i| ~ 0.125)."""

    def __init__(self, numel: int, c: float = 0.0125, omega: float = 40.0) -> None:
        super().__init__()
        w = torch.randn(numel, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        self.w = nn.Parameter(w / w.norm())
        self.c, self.omega = c, omega

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z.flatten(1)
        return z @ self.w + self.c * torch.cos(self.omega * z).sum(dim=1)


def _planted_setup(**kwargs):
    model = Planted(64, **kwargs)
    x = 0.5 + 0.05 * torch.rand((1, 1, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return model, x


def _shift_along_w(model: Planted, x: torch.Tensor, x_adv: torch.Tensor, eps: float) -> float:
    return float((x_adv - x).flatten() @ model.w.detach()) / eps


def test_smoothed_attack_reaches_the_planted_median_shift():
    model, x = _planted_setup()
    smoothed, eps = SmoothedIQA(model, 0.12, n=500, seed=0, batch_size=256), 0.2
    strong = SmoothedPGDL2.strong(smoothed, eps, direction="up", seed=0)
    assert _shift_along_w(model, x, strong(x), eps) >= 0.95
    assert _shift_along_w(model, x, SmoothedPGDL2.strong(smoothed, eps, direction="down", seed=1)(x), eps) <= -0.95
    assert _shift_along_w(model, x, SmoothedPGDL2(smoothed, eps, direction="up", seed=0)(x), eps) >= 0.9  # cheap
    # the same budget spent on the base model without its noise is misled by the cosines
    assert _shift_along_w(model, x, PGDL2(model, eps, steps=50, direction="up", seed=0)(x), eps) < 0.8


def test_smoothed_attack_goes_through_the_denoiser():
    """With D(z) = 1 - z in front, raising the smoothed score means moving against w."""
    model, x = _planted_setup(c=0.0)
    smoothed = SmoothedIQA(model, 0.12, n=200, seed=0, denoiser=lambda z: 1.0 - z)
    assert _shift_along_w(model, x, SmoothedPGDL2(smoothed, 0.2, direction="up", seed=0)(x), 0.2) <= -0.95


def test_smoothed_attack_sees_noisy_clipped_images_through_the_denoiser():
    seen_by_denoiser, seen_by_model = [], []

    def denoiser(z: torch.Tensor) -> torch.Tensor:
        seen_by_denoiser.append(z.detach().clone())
        return z * 0.5 + 0.25

    def model(z: torch.Tensor) -> torch.Tensor:
        seen_by_model.append(z.detach().clone())
        return z.mean(dim=(1, 2, 3))

    x = torch.full((1, 3, 6, 6), 0.95, dtype=torch.float64)
    smoothed = SmoothedIQA(model, 0.3, n=16, seed=0, denoiser=denoiser, batch_size=64)
    SmoothedPGDL2(smoothed, 0.1, steps=2, samples=64, direction="down", seed=0)(x)
    noisy = torch.cat(seen_by_denoiser)
    assert noisy.min() >= 0 and noisy.max() <= 1 and (noisy == 1).any()  # clipped, and the clip bites
    assert 0.15 < float((noisy - 0.95)[noisy < 1].std()) < 0.35  # noise of std 0.3, truncated
    torch.testing.assert_close(torch.cat(seen_by_model), noisy * 0.5 + 0.25)


def test_smoothed_attack_budget_range_and_validation(tiny):
    smoothed = SmoothedIQA(tiny, 0.1, n=32, seed=0)
    x = torch.rand((2, 3, 40, 40), generator=torch.Generator().manual_seed(2))
    x_adv = SmoothedPGDL2(smoothed, 0.5, steps=3, samples=8, restarts=2, direction="up", seed=0)(x)
    assert x_adv.shape == x.shape and x_adv.min() >= 0 and x_adv.max() <= 1
    assert float((x_adv - x).flatten(1).norm(dim=1).max()) <= 0.5 * (1 + 1e-5)
    assert torch.equal(SmoothedPGDL2(smoothed, 0.0, direction="up")(x), x)
    with pytest.raises(ValueError, match="objective must be"):
        SmoothedPGDL2(smoothed, 0.1, objective="mode")
    with pytest.raises(ValueError, match="objective must be"):
        SmoothedPGDL2(smoothed, 0.1, objective=1.5)
    with pytest.raises(ValueError, match="step_size="):
        SmoothedPGDL2(smoothed, 0.1, alpha=0.01)
    with pytest.raises(ValueError, match="restarts must be"):
        SmoothedPGDL2(smoothed, 0.1, restarts=0)
    with pytest.raises(TypeError, match="SmoothedIQA"):
        SmoothedPGDL2(tiny, 0.1)
    with pytest.raises(ValueError, match="q must lie"):
        harrell_davis_weights(5, 1.0)
    assert harrell_davis_weights(1, 0.5).tolist() == [1.0]
