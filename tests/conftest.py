"""Shared fixtures. Real data lives in ../shared/data beside the repository and is
read in place; tests that need it skip with a reason when it is absent."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings
from torch import nn

# CI runs the same examples every time (a failure there is then reproducible);
# local runs keep exploring new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


class Linear(nn.Module):
    """f(x) = w.x + b over all pixels, w ~ N(0, scale^2) seeded, float64: without clipping
    f(x + G) ~ N(w.x + b, sigma^2 |w|^2), so every smoothed percentile is known exactly."""

    def __init__(self, shape: tuple[int, ...] | int = (3, 4, 4), seed: int = 0, scale: float = 0.2,
                 bias: float = 0.3) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        numel = shape if isinstance(shape, int) else math.prod(shape)
        self.w = nn.Parameter(torch.randn(numel, generator=g, dtype=torch.float64) * scale)
        self.b = nn.Parameter(torch.tensor(bias, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.b


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked ``cuda`` (or parametrized with one) on a machine without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device on this machine")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "manifest.csv").is_file():
        pytest.skip(f"real data not found at {SHARED_DATA} (it sits beside the repository, never inside it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def cnniqa_live(shared_data):
    from certiqa.models import CNNIQA

    return CNNIQA.from_file(shared_data / "models" / "cnniqa-live.pt")
