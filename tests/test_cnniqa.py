"""CNNIQA: parity with the original implementation's scores, conventions and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from certiqa.models import CNNIQA, rgb_to_luma


def _gray8(path) -> torch.Tensor:
    """The reference convention: PIL convert('L') (rounded 8-bit luma) / 255, one channel."""
    return torch.from_numpy(np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0)[None, None]


def _rgb(path) -> torch.Tensor:
    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None]


def test_reproduces_every_reference_score(shared_data, cnniqa_live):
    reference = json.loads((shared_data / "models" / "cnniqa-live.reference.json").read_text())
    assert len(reference) >= 90
    with torch.inference_mode():
        ours = {name: float(cnniqa_live(_gray8(shared_data / name))) for name in reference}
    errors = {name: abs(ours[name] - value) for name, value in reference.items()}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 0.01, f"{worst}: ours {ours[worst]:.4f}, reference {reference[worst]:.4f}"
    # three equal channels give the same grayscale (the luma weights sum to 1)
    name = "images/labelled/live_img66.png"
    with torch.inference_mode():
        three = float(cnniqa_live(_gray8(shared_data / name).expand(1, 3, -1, -1)))
    assert three == pytest.approx(reference[name], abs=0.01)


def test_float_luma_shift_is_as_documented(shared_data, cnniqa_live):
    """Float (unrounded) luma of the RGB image moves scores: README documents median ~0.07, max ~3.3."""
    reference = json.loads((shared_data / "models" / "cnniqa-live.reference.json").read_text())
    with torch.inference_mode():
        shifts = [abs(float(cnniqa_live(_rgb(shared_data / name))) - value) for name, value in reference.items()]
    assert 0.02 < float(np.median(shifts)) < 0.15
    assert 1.0 < max(shifts) < 4.0


@pytest.mark.parametrize("size, patches", [((33, 33), 1), ((64, 64), 1), ((65, 96), 4), ((384, 512), 11 * 15)])
def test_patch_grid_convention(size, patches):
    x = torch.rand(2, 1, *size)
    assert CNNIQA().patches(x).shape == (2, patches, 1, 32, 32)


def test_patch_normalisation_matches_scipy_reference():
    from scipy.signal import convolve2d

    patch = np.random.default_rng(0).random((32, 32))
    kernel = np.ones((3, 3)) / 9
    mean = convolve2d(patch, kernel, boundary="symm", mode="same")
    sq = convolve2d(patch**2, kernel, boundary="symm", mode="same")
    expected = (patch - mean) / (np.sqrt(np.maximum(sq - mean**2, 0)) + 1)
    image = torch.zeros(1, 1, 33, 33, dtype=torch.float64)
    image[..., :32, :32] = torch.from_numpy(patch)  # the one patch of a 33x33 image
    got = CNNIQA().patches(image)
    np.testing.assert_allclose(got[0, 0, 0].numpy(), expected, atol=1e-5)


def test_batch_equals_single_and_is_differentiable():
    torch.manual_seed(0)
    model = CNNIQA().eval()
    x = torch.rand(3, 3, 70, 90)
    batch = model(x)
    singles = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batch, singles, rtol=1e-5, atol=1e-5)
    flat = torch.full((1, 3, 40, 40), 0.5, requires_grad=True)  # zero local variance everywhere
    model(flat).sum().backward()
    assert torch.isfinite(flat.grad).all() and flat.grad.abs().sum() > 0


def test_rgb_to_luma_weights():
    x = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    assert rgb_to_luma(x).item() == pytest.approx(0.299)
    assert rgb_to_luma(torch.ones(1, 3, 2, 2)).allclose(torch.ones(1, 1, 2, 2))


def test_input_errors():
    model = CNNIQA()
    with pytest.raises(ValueError, match="at least 33x33 pixels, got 32x100"):
        model(torch.rand(1, 3, 32, 100))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\) or \(B, 3, H, W\), got \(1, 2, 40, 40\)"):
        model(torch.rand(1, 2, 40, 40))


def test_from_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        CNNIQA.from_file(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ValueError, match=r"not a PyTorch file .* expected a state dict written by torch\.save"):
        CNNIQA.from_file(junk)
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv1.weight": torch.zeros(3)}, wrong)
    with pytest.raises(ValueError, match="missing keys"):
        CNNIQA.from_file(wrong)
    shapes = tmp_path / "shapes.pt"
    state = CNNIQA().state_dict()
    state["fc3.weight"] = torch.zeros(2, 800)
    torch.save(state, shapes)
    with pytest.raises(ValueError, match="wrong shape"):
        CNNIQA.from_file(shapes)
    pickled = tmp_path / "module.pt"
    torch.save(CNNIQA(), pickled)  # a whole pickled module: refused by weights_only=True
    with pytest.raises(ValueError, match=r"pickle of Python objects.*: save model\.state_dict\(\)\.$"):
        CNNIQA.from_file(pickled)


def test_from_file_round_trip(tmp_path):
    model = CNNIQA(kernels=8, hidden=16, lower_better=False, score_range=(0.0, 1.0))
    torch.save(model.state_dict(), tmp_path / "m.pt")
    loaded = CNNIQA.from_file(tmp_path / "m.pt", kernels=8, hidden=16, lower_better=False, score_range=(0.0, 1.0))
    assert not loaded.training and loaded.lower_better is False
    x = torch.rand(1, 3, 40, 40)
    torch.testing.assert_close(loaded(x), model.eval()(x))
