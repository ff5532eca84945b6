"""Synthetic training data, the fitting loop and the shared-data evaluation (small and fast)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from certiqa.distortions import DISTORTIONS, LEVELS
from certiqa.evaluation import evaluate_model, markdown_table, read_manifest
from certiqa.training import CROP, build_synthetic_dataset, fit_cnniqa, ssim_map


def _photos() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 100), torch.linspace(0, 1, 104), indexing="ij")
    smooth = torch.stack((torch.sin(7 * xx) * 0.3 + 0.5, torch.cos(5 * yy) * 0.3 + 0.5, xx * 0.6 + 0.2))
    return [(smooth + 0.1 * torch.rand(smooth.shape, generator=gen)).clamp(0, 1)]


@pytest.fixture(scope="module")
def data():
    return build_synthetic_dataset(_photos(), crops_per_version=1, pristine_copies=2, seed=0, progress=False)


def test_dataset_layout_and_labels(data) -> None:
    versions = 2 + len(DISTORTIONS) * len(LEVELS)
    assert len(data) == versions
    assert data.crops.shape == (len(data), 3, CROP, CROP) and data.crops.dtype == torch.uint8
    assert float(data.scores.min()) >= 0.0 and float(data.scores.max()) <= 100.0
    pristine = data.distortion == -1
    assert int(pristine.sum()) == 2
    assert torch.allclose(data.scores[pristine], torch.full((2,), 100.0), atol=1e-3)
    assert (data.scores[~pristine] < 100.0).any()
    assert set(data.level[~pristine].tolist()) == set(LEVELS)


def test_dataset_deterministic_by_seed(data) -> None:
    again = build_synthetic_dataset(_photos(), crops_per_version=1, pristine_copies=2, seed=0, progress=False)
    assert torch.equal(again.crops, data.crops) and torch.equal(again.scores, data.scores)


def test_ssim_map_is_one_for_identical_images() -> None:
    x = _photos()[0][None]
    assert torch.allclose(ssim_map(x, x), torch.ones(1, 1, *x.shape[-2:]), atol=1e-4)
    assert float(ssim_map(x, (x + 0.2 * torch.randn_like(x)).clamp(0, 1)).mean()) < 0.9


def test_dataset_argument_errors() -> None:
    with pytest.raises(ValueError, match="crops_per_version must be an integer >= 1"):
        build_synthetic_dataset(_photos(), crops_per_version=0, progress=False)
    with pytest.raises(ValueError, match="scale_range"):
        build_synthetic_dataset(_photos(), scale_range=(0.0, 1.0), progress=False)


def test_fit_returns_a_higher_better_model_and_logs(data) -> None:
    logged: list[str] = []
    result = fit_cnniqa(data, data, kernels=4, hidden=8, steps=4, batch_size=4, log_every=2, log=logged.append,
                        progress=False)
    assert result.model.lower_better is False and not result.model.training
    assert [h["step"] for h in result.history] == [2.0, 4.0]
    assert all(h["loss"] >= 0 and -1 <= h["val_srocc"] <= 1 for h in result.history)
    assert len(logged) == 2 and "loss=" in logged[0]
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        fit_cnniqa(data, lr=0.0, progress=False)


class _Brightness(torch.nn.Module):
    """Scores an image by its mean pixel value (a parameter only to carry the device)."""

    def __init__(self, lower_better: bool) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        self.lower_better = lower_better

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(1, 2, 3)) + self.anchor


def _fake_data(root) -> None:
    """Gray images whose brightness follows known scores; lower-is-better rows use 100 - score."""
    rows = ["file,dataset,score,scale_min,scale_max,higher_is_better,source,note"]
    (root / "images" / "labelled").mkdir(parents=True)
    (root / "images" / "ladders").mkdir(parents=True)

    def gray(rel: str, value: int) -> None:
        Image.fromarray(np.full((40, 40, 3), value, dtype=np.uint8)).save(root / rel)

    for i, good in enumerate((0.2, 0.5, 0.9, 0.4)):
        rel = f"images/labelled/img{i}.png"
        gray(rel, int(40 + 200 * good))
        if i % 2:  # a DMOS-like scale, lower is better
            rows.append(f"{rel},LIVE,{100 * (1 - good)},0,100,0,src,")
        else:
            rows.append(f"{rel},TID2013,{9 * good},0,9,1,src,")
    ssims = {"gblur": (0.5, 0.7, 0.9, 1.0), "jpeg": (0.6, 0.8, 1.0)}
    for dist, values in ssims.items():
        for step, ssim in enumerate(values, 1):
            rel = f"images/ladders/live_{dist}_house_{step}.png"
            value = int(250 * ssim) if dist == "gblur" else int(250 * (1.6 - ssim))  # jpeg: anti-ordered
            gray(rel, value)
            rows.append(f"{rel},LIVE-{dist},{ssim},0,1,1,src,")
    rows.append("images/ladders/live_jpeg_tree_1.png,LIVE-jpeg,0.5,0,1,1,src,")  # a group of one: skipped
    gray("images/ladders/live_jpeg_tree_1.png", 100)
    rows.append("images/reference/ref.png,LIVE-ref,,,,,src,")  # no score: ignored
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")


def test_evaluation_on_known_scores(tmp_path) -> None:
    _fake_data(tmp_path)
    rows = read_manifest(tmp_path)
    assert len(rows) == 4 + 7 + 1
    up = evaluate_model(_Brightness(lower_better=False), tmp_path)
    assert up.labelled_n == 4
    assert up.labelled_srocc == pytest.approx(1.0) and up.labelled_plcc > 0.99
    assert up.ladder_groups == 2
    assert up.ladder_by_distortion == pytest.approx({"gblur": 1.0, "jpeg": -1.0})
    assert up.ladder_srocc == pytest.approx(0.0)
    down = evaluate_model(_Brightness(lower_better=True), tmp_path)
    assert down.labelled_srocc == pytest.approx(-1.0)
    assert down.ladder_by_distortion == pytest.approx({"gblur": -1.0, "jpeg": 1.0})
    table = markdown_table({"bright": up})
    assert table.splitlines()[0].startswith("| model |") and "| bright | 1.000 (n=4) |" in table


def test_evaluation_needs_enough_rows(tmp_path) -> None:
    (tmp_path / "manifest.csv").write_text("file,dataset,score,scale_min,scale_max,higher_is_better,source,note\n")
    with pytest.raises(ValueError, match="0 labelled and 0 ladder images"):
        evaluate_model(_Brightness(False), tmp_path)


def test_evaluation_real_data_manifest(shared_data) -> None:
    rows = read_manifest(shared_data)
    assert sum(r.file.startswith("images/labelled/") for r in rows) == 8
    assert sum(r.file.startswith("images/ladders/") for r in rows) == 67


def test_manifest_missing(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no manifest.csv"):
        read_manifest(tmp_path)
