"""A tiny end-to-end run of the defense comparison."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from certiqa import SmoothedIQA
from certiqa.benchmark import (
    BenchmarkConfig,
    BenchmarkImage,
    Defense,
    format_markdown,
    load_benchmark_images,
    plot_benchmark,
    run_benchmark,
)
from certiqa.models import CNNIQA

TINY = BenchmarkConfig(
    n=40, n_eval=10, n_check=60, alpha=0.2, sigma=0.1, linf_budgets=(4 / 255,), l2_budgets=(0.02, 0.5),
    attacks=("FGSM", "PGDL2"), steps=2, eot_samples=2, batch_size=64,
)


def _images() -> list[BenchmarkImage]:
    gen = torch.Generator().manual_seed(0)
    return [BenchmarkImage(f"im{i}", torch.rand((3, 34, 34), generator=gen), human=h)
            for i, h in enumerate([0.2, 0.9, 0.5])]


def test_tiny_end_to_end(tmp_path):
    torch.manual_seed(0)
    base = CNNIQA(kernels=4, hidden=16).eval()
    nt_model = CNNIQA(kernels=4, hidden=16).eval()
    denoiser = nn.AvgPool2d(3, 1, 1)
    defenses = [
        Defense("base", model=base),
        Defense("NT", model=nt_model),
        Defense("smoothing", smoothed=SmoothedIQA(base, TINY.sigma)),
        Defense("smoothing + denoiser", smoothed=SmoothedIQA(base, TINY.sigma, denoiser=denoiser)),
    ]
    result = run_benchmark(defenses, _images(), TINY, score_range=(-10.0, 10.0), lower_better=True, progress=False)
    assert result.value("clean SROCC vs base (3 img)", "base") == pytest.approx(1.0)
    assert "clean PLCC vs human (3 img)" in {r["metric"] for r in result.rows}
    for name in result.defenses:
        for attack in ("FGSM linf 4/255", "PGDL2 l2 0.5"):
            change = result.value(f"{attack}: mean abs change", name)
            assert math.isfinite(change) and change > 0
            assert math.isfinite(result.value(f"{attack}: R", name))
    for name in ("smoothing", "smoothing + denoiser"):
        cert = result.value("certified l2 0.02: width (certified/images)", name)
        assert cert.endswith("(3/3)")
        violations, certificates = result.value("soundness l2 0.02: violations/certificates", name).split()[0].split("/")
        assert int(certificates) == 3 and 0 <= int(violations) <= 3
        assert result.value("certified l2 0.5: width (certified/images)", name) == "none/3"
    with pytest.raises(KeyError):
        result.value("certified l2 0.02: width (certified/images)", "base")
    table = format_markdown(result)
    lines = table.splitlines()
    assert lines[0] == "| metric | base | NT | smoothing | smoothing + denoiser |"
    assert all(line.count("|") == 6 for line in lines)  # no stray pipes in metric names
    assert "| certified l2 0.02: width (certified/images) | — | — |" in table
    result.write_csv(tmp_path / "r.csv")
    assert (tmp_path / "r.csv").read_text().startswith("metric,defense,value")
    pytest.importorskip("matplotlib")
    plot_benchmark(result, TINY, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_config_and_defense_errors():
    with pytest.raises(ValueError, match="n_check"):
        dataclasses.replace(TINY, n_check=10).check()
    with pytest.raises(ValueError, match="unknown attacks"):
        dataclasses.replace(TINY, attacks=("CW",)).check()
    with pytest.raises(ValueError, match="steps"):
        dataclasses.replace(TINY, steps=0).check()
    with pytest.raises(ValueError, match="exactly one"):
        Defense("x")
    with pytest.raises(ValueError, match="at least one"):
        run_benchmark([], _images(), TINY, score_range=(0, 1), lower_better=True)


def test_loads_labelled_images_first(shared_data):
    images = load_benchmark_images(shared_data, 9, resize=40)
    assert [im.human is not None for im in images] == [True] * 8 + [False]
    assert all(0 <= im.human <= 1 for im in images[:8]) and min(images[0].image.shape[1:]) == 40
    live = {im.name: im.human for im in images}["live_img191.png"]  # DMOS 78.157 of 100, lower is better
    assert live == pytest.approx(1 - 0.78157)
    with pytest.raises(ValueError, match="asked for"):
        load_benchmark_images(shared_data, 1000, resize=40)
