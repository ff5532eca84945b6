"""The black-box Square attack: budget, [0, 1], query counting, improvement of its
objective on CNNIQA, the window schedule, and what it finds where gradients are masked."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from certiqa.attacks import IFGSM, SquareAttack
from certiqa.defenses import BitDepth, Purified
from certiqa.models import CNNIQA


class Counting(nn.Module):
    """Wraps a model and counts how many images it has scored."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.images = 0
        self.lower_better = model.lower_better
        self.score_range = model.score_range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return self.model(x)


@pytest.fixture(scope="module")
def tiny() -> CNNIQA:
    torch.manual_seed(0)
    return CNNIQA(kernels=4, hidden=16).eval()


def _x(batch: int = 2) -> torch.Tensor:
    return torch.rand((batch, 3, 40, 40), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("direction", ["up", "down"])
def test_improves_within_budget_and_query_count(direction, tiny):
    counting = Counting(tiny)
    x = _x()
    eps, queries = 8 / 255, 40
    attack = SquareAttack(counting, eps, queries=queries, direction=direction, seed=0)
    x_adv = attack(x)
    assert counting.images == 2 * queries  # every query of every image counted, none beyond the budget
    assert attack.queries_used.tolist() == [queries, queries]
    assert x_adv.shape == x.shape and float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert float((x_adv - x).abs().max()) <= eps + 1e-6
    sign = 1.0 if direction == "up" else -1.0
    with torch.no_grad():
        clean, attacked = tiny(x), tiny(x_adv)
    assert torch.allclose(attack.objective, sign * attacked)
    assert bool((sign * (attacked - clean) > 0).all())  # the objective improved on every image


def test_never_worse_than_clean_and_reproducible(tiny):
    x = _x(3)
    runs = [SquareAttack(tiny, 2 / 255, queries=12, direction="away", score_range=(0, 1), seed=5)(x) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    attack = SquareAttack(tiny, 2 / 255, queries=3, direction="up", seed=7)
    x_adv = attack(x)
    with torch.no_grad():
        assert bool((tiny(x_adv) >= tiny(x)).all())  # rejected proposals leave the clean image
    assert SquareAttack(tiny, 0.0, queries=5)(x).equal(x)


def test_window_schedule():
    attack = SquareAttack(lambda z: z.mean((1, 2, 3)), 0.1, queries=1002, p_init=0.05, direction="up")
    sides = [attack.window_side(i, 100, 100) for i in range(attack.steps)]
    assert sides[0] == round(math.sqrt(0.05 * 100 * 100))  # 22: p_init of the pixels
    assert sides[-1] == round(math.sqrt(0.05 / 2**9 * 100 * 100))  # 1 after nine halvings
    assert all(a >= b for a, b in zip(sides, sides[1:]))
    assert attack.window_side(0, 3, 200) == 3  # never larger than the image


def test_finds_what_masked_gradients_hide():
    """Bit-depth reduction without BPDA has a zero gradient: a white-box attack does not move
    the score at all, the query-based one does."""
    torch.manual_seed(0)
    model = Purified(CNNIQA(kernels=4, hidden=16).eval(), BitDepth(3), bpda=False)
    x = _x(1)
    with torch.no_grad():
        clean = float(model(x))
        white = float(model(IFGSM(model, 8 / 255, steps=5, direction="up")(x)))
        black = float(model(SquareAttack(model, 8 / 255, queries=40, direction="up", seed=0)(x)))
    assert white == clean
    assert black > clean


def test_errors(tiny):
    with pytest.raises(ValueError, match="queries"):
        SquareAttack(tiny, 0.1, queries=1)
    with pytest.raises(ValueError, match="no gradient"):
        SquareAttack(tiny, 0.1, steps=3)
    with pytest.raises(ValueError, match="p_init"):
        SquareAttack(tiny, 0.1, p_init=1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        SquareAttack(tiny, 0.1, direction="up")(_x() * 3)
    assert "queries=7" in repr(SquareAttack(tiny, 0.1, queries=7, direction="up"))
