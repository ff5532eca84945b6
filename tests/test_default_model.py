"""The embedded default model, and the CLI using it when --weights is not given."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import certiqa
from certiqa.cli import main
from certiqa.distortions import DISTORTIONS, distort
from certiqa.model_evaluation import evaluate_model, evenly_spaced
from certiqa.io import load_image
from certiqa.models import CNNIQA, DEFAULT_CONFIG, default_model
from certiqa.models.default import DEFAULT_WEIGHTS

IMAGES = Path(__file__).resolve().parents[1] / "examples" / "images"


@pytest.fixture(scope="module")
def model() -> CNNIQA:
    return default_model()


@pytest.fixture(scope="module")
def clean() -> torch.Tensor:
    return load_image(IMAGES / "chelsea_clean.png").unsqueeze(0)


def test_weights_ship_inside_the_package_and_are_small() -> None:
    assert DEFAULT_WEIGHTS.parent == Path(certiqa.__file__).resolve().parent / "weights"
    assert DEFAULT_WEIGHTS.is_file()
    assert DEFAULT_WEIGHTS.stat().st_size <= 5 * 1024 * 1024


def test_attributes_and_architecture(model: CNNIQA) -> None:
    assert isinstance(model, CNNIQA) and not model.training
    assert model.lower_better is False
    assert model.score_range == (0.0, 100.0)
    assert model.conv1.out_channels == DEFAULT_CONFIG["kernels"]
    assert model.fc1.out_features == DEFAULT_CONFIG["hidden"]
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_loaded_with_weights_only(model: CNNIQA) -> None:
    state = torch.load(DEFAULT_WEIGHTS, map_location="cpu", weights_only=True)
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value)


@torch.no_grad()
def test_scores_finite_in_range_and_ordered(model: CNNIQA, clean: torch.Tensor) -> None:
    batch = torch.cat(
        [
            clean,
            distort(clean, "gaussian_blur", 5),
            distort(clean, "gaussian_noise", 5, generator=0),
            distort(clean, "jpeg", 5),
        ]
    )
    scores = model(batch)
    assert scores.shape == (4,) and torch.isfinite(scores).all()
    assert float(scores[0]) > 50.0  # a clean photo scores well on the 0-100 scale
    # higher is better: each heavy distortion scores clearly below the clean image
    assert (scores[1:] < scores[0] - 5.0).all(), scores.tolist()


@pytest.mark.parametrize("name", sorted(set(DISTORTIONS) - {"saturation"}))
@torch.no_grad()
def test_scores_fall_with_level(name: str, model: CNNIQA, clean: torch.Tensor) -> None:
    # (saturation is left out: CNNIQA reads luma only)
    scores = [float(model(distort(clean, name, level, generator=0))) for level in (1, 3, 5)]
    assert scores[0] > scores[1] > scores[2], scores


def test_default_model_orders_the_live_ladders(model: CNNIQA, shared_data) -> None:
    """Mean SROCC against SSIM within the LIVE (reference x distortion) ladders of the shared
    data >= 0.95, and >= 0.9 for each distortion (full-resolution images, about 10 s)."""
    result = evaluate_model(model, shared_data)
    assert result.ladder_groups == 14
    assert result.ladder_srocc >= 0.95, result
    assert set(result.ladder_by_distortion) == {"gblur", "jpeg", "wnoise"}
    assert all(value >= 0.9 for value in result.ladder_by_distortion.values()), result.ladder_by_distortion


def test_shipped_denoiser_keeps_the_examples_apart(model: CNNIQA) -> None:
    """Smoothed median (sigma 0.12, the shipped denoiser, n 24, seed 0) of the four example
    images: the clean photograph stays on top, and no score collapses far from its clean
    value (the old denoisers put every image near 95)."""
    from certiqa import SmoothedIQA
    from certiqa.denoisers import pretrained

    names = ("chelsea_clean.png", "astronaut_motion3.png", "rocket_jpeg4.png", "coffee_blur3.png")
    x = torch.stack([load_image(IMAGES / name) for name in names])
    with torch.no_grad():
        clean = model(x)
    smoothed = SmoothedIQA(model, 0.12, n=24, seed=0, denoiser=pretrained(0.12)).predict(x)
    assert int(smoothed.argmax()) == 0 and int(clean.argmax()) == 0, (smoothed, clean)
    assert float((smoothed - clean).abs().max()) < 15.0, (smoothed, clean)
    assert float(smoothed.max() - smoothed.min()) > 5.0, smoothed


def test_cli_certify_uses_the_default_model(capsys) -> None:
    path = IMAGES / "coffee_blur3.png"
    assert main(["certify", str(path), "--n", "20", "--quiet", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert "coffee_blur3.png" in out


def test_missing_default_weights_is_a_clear_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr("certiqa.models.default.DEFAULT_WEIGHTS", tmp_path / "absent.pt")
    with pytest.raises(FileNotFoundError, match="default model's weights are missing"):
        default_model()


def test_evenly_spaced_indices():
    assert evenly_spaced(8, 3) == [0, 4, 7]  # 0, 3.5, 7 (3.5 rounds to 4)
    assert evenly_spaced(93, 20) == [0, 5, 10, 15, 19, 24, 29, 34, 39, 44, 48, 53, 58, 63, 68, 73, 77, 82, 87, 92]
    assert evenly_spaced(5, None) == evenly_spaced(5, 9) == [0, 1, 2, 3, 4]
    assert evenly_spaced(5, 1) == [0]
    with pytest.raises(ValueError, match="k must be >= 1"):
        evenly_spaced(5, 0)
