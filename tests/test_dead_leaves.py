"""Dead-leaves images: the radius law, coverage, determinism, the fill rule, errors, the script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from certiqa.dead_leaves import dead_leaves, dead_leaves_radii

REPO = Path(__file__).resolve().parents[1]


def test_radii_follow_the_r_minus_3_law() -> None:
    """Kolmogorov-Smirnov against the exact CDF (rmin^-2 - t^-2) / (rmin^-2 - rmax^-2), 20000 seeded
    draws: a correct sampler fails at level 0.001 once in a thousand seeds; a density r^-2 or r^-4, or
    u and 1 - u swapped, gives p-values far below 1e-10."""
    rmin, rmax = 2.0, 300.0
    r = dead_leaves_radii(20000, rmin, rmax, generator=torch.Generator().manual_seed(0)).numpy()
    assert r.min() >= rmin and r.max() <= rmax

    def cdf(t: np.ndarray) -> np.ndarray:
        return (rmin ** -2 - np.clip(t, rmin, rmax) ** -2) / (rmin ** -2 - rmax ** -2)

    assert stats.kstest(r, cdf).pvalue > 1e-3
    # the median in closed form: (rmin^-2 - (rmin^-2 - rmax^-2) / 2)^(-1/2) = 2.8284 for these radii
    assert np.median(r) == pytest.approx((rmin ** -2 - (rmin ** -2 - rmax ** -2) / 2) ** -0.5, rel=0.02)


def test_image_shape_range_and_determinism() -> None:
    x = dead_leaves(30, 41, generator=torch.Generator().manual_seed(3))
    assert x.shape == (3, 30, 41) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.equal(x, dead_leaves(30, 41, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(x, dead_leaves(30, 41, generator=torch.Generator().manual_seed(4)))
    assert float(x.std()) > 0.05  # not one flat colour


def test_every_pixel_is_covered_by_disks() -> None:
    """Flat black and white disks drawn at twice the size and averaged over 2 x 2: every output pixel
    is k/4 of white in all three channels. An uncovered pixel would take the mean disk colour instead,
    which is not a multiple of 1/4 for this seed (checked below with max_disks=5)."""
    palette = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    x = dead_leaves(24, 32, palette=palette, texture=0.0, generator=torch.Generator().manual_seed(1))
    quarters = x * 4
    assert torch.equal(quarters, quarters.round())
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    partial = dead_leaves(24, 32, radius_min=1.0, radius_max=2.0, palette=palette, texture=0.0, max_disks=5,
                          generator=torch.Generator().manual_seed(1))
    assert not torch.equal(partial * 4, (partial * 4).round())


def test_uncovered_pixels_take_the_mean_colour_of_the_disks() -> None:
    """One disk of a one-colour palette: the disk and the rest of the image are that colour exactly."""
    colour = torch.tensor([[0.25, 0.5, 0.75]])
    x = dead_leaves(16, 16, radius_min=1.0, radius_max=2.0, palette=colour, texture=0.0, max_disks=1,
                    generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x, colour[0][:, None, None].expand(3, 16, 16))


def test_texture_zero_gives_flat_disks_and_texture_adds_variation() -> None:
    palette = torch.tensor([[0.5, 0.5, 0.5]])
    flat = dead_leaves(32, 32, palette=palette, texture=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(flat, torch.full_like(flat, 0.5))
    textured = dead_leaves(32, 32, palette=palette, texture=0.5, generator=torch.Generator().manual_seed(0))
    assert float(textured.std()) > 0.01


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"height": 0, "width": 8}, "height must be an integer >= 1"),
        ({"height": 8, "width": 8, "radius_min": 0.0}, "radius_min must be a finite number > 0"),
        ({"height": 8, "width": 8, "radius_min": 4.0, "radius_max": 4.0}, "radius_max must be larger"),
        ({"height": 8, "width": 8, "texture": -0.1}, "texture must be a finite number >= 0"),
        ({"height": 8, "width": 8, "max_disks": 0}, "max_disks must be an integer >= 1"),
        ({"height": 8, "width": 8, "palette": torch.ones(3)}, r"palette must be a \(K, 3\) tensor"),
        ({"height": 8, "width": 8, "palette": torch.full((2, 3), 2.0)}, r"colours in \[0, 1\]"),
        ({"height": 8, "width": 8, "palette": torch.ones(2, 3, dtype=torch.uint8)}, r"colours in \[0, 1\]"),
    ],
)
def test_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        dead_leaves(**kwargs)


def test_radii_errors() -> None:
    with pytest.raises(ValueError, match="count must be an integer >= 1"):
        dead_leaves_radii(0, 1.0, 2.0)
    with pytest.raises(ValueError, match="radius_max must be larger"):
        dead_leaves_radii(5, 3.0, 1.0)


def test_make_training_photos_writes_dead_leaves_ladders(tmp_path: Path) -> None:
    script = REPO / "denoisers" / "make_training_photos.py"
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "--photos", "--dead-leaves", "2",
         "--dead-leaves-size", "20", "24", "--grid", "jpeg"],
        capture_output=True, text=True, check=True,
    )
    assert "wrote 12 images" in run.stdout
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[0] == "deadleaves000_clean.png" and "deadleaves001_jpeg5.png" in names and len(names) == 12
    assert Image.open(tmp_path / "deadleaves000_jpeg3.png").size == (24, 20)
    failed = subprocess.run([sys.executable, str(script), str(tmp_path / "none"), "--photos"],
                            capture_output=True, text=True)
    assert failed.returncode == 2 and "nothing to write" in failed.stderr
