"""Attacks: budgets, [0, 1], direction of the score change, errors."""

from __future__ import annotations

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
    make_attack,
    sobel_activity,
)
from certiqa.io import load_image
from certiqa.models import CNNIQA

LINF = [FGSM, IFGSM, MIFGSM, PGD, Korhonen]
ALL = LINF + [PGDL2]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


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
