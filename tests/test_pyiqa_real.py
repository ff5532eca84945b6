"""certiqa with the real pyiqa package: five no-reference architectures that build without
a download (pyiqa's CNNIQA, WaDIQaM-NR, MUSIQ and TOPIQ-NR untrained, and PIQE, which has
no weights), through the spec, certification, attacks, the sigma sweep and denoiser
training. Skipped where pyiqa is not installed; tests/test_model_spec.py covers the spec
with a stand-in of pyiqa's interface everywhere."""

from __future__ import annotations

import csv
import os

import pytest
import torch
from PIL import Image

pytest.importorskip("pyiqa", reason="pyiqa is not installed (pip install pyiqa); the stand-in tests cover the spec")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a build that wants a download fails at once instead of retrying

from certiqa.attacks import PGDL2  # noqa: E402
from certiqa.cli import main  # noqa: E402
from certiqa.denoisers.training import TrainConfig, TrainImage, train_denoiser  # noqa: E402
from certiqa.models import ModelSpecError, load_model  # noqa: E402
from certiqa.smoothing import SmoothedIQA  # noqa: E402
from certiqa.sweep import sweep_sigma  # noqa: E402

SPECS = {
    "cnniqa": "pyiqa:cnniqa(pretrained=None)",
    "wadiqam_nr": "pyiqa:wadiqam_nr(pretrained=False)",
    "musiq": "pyiqa:musiq(pretrained=False)",
    "topiq_nr": "pyiqa:topiq_nr(pretrained=False, backbone_pretrain=False)",
    "piqe": "pyiqa:piqe",
}
PHOTOS = ("labelled/live_img66.png", "reference/tid2013_I01.png")


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)  # untrained weights: the same ones on every run
    return {name: load_model(spec) for name, spec in SPECS.items()}


@pytest.fixture(scope="module")
def photos(shared_data):
    """Two real photographs, 64x64 crops, (2, 3, 64, 64) in [0, 1]."""
    from certiqa.io import read_image

    crops = [read_image(shared_data / "images" / p).image[:, 40:104, 40:104] for p in PHOTOS]
    return torch.stack(crops)


def test_specs_build_offline_with_pyiqas_metadata(models):
    from pyiqa.default_model_configs import DEFAULT_CONFIGS

    for name, model in models.items():
        config = DEFAULT_CONFIGS[name]
        assert model.lower_better is config.get("lower_better", False), name
        assert model.randomized is False, name  # deterministic in eval mode: two probe calls agree
    assert models["piqe"].lower_better is True and models["musiq"].score_range == (0.0, 100.0)


def test_download_and_bad_options_are_one_line_errors():
    with pytest.raises(ModelSpecError) as caught:
        load_model("pyiqa:paq2piq")  # its weights would be downloaded
    message = str(caught.value)
    assert "\n" not in message and "pretrained_model_path='FILE'" in message and "pretrained=False" in message
    with pytest.raises(ModelSpecError, match=r"pyiqa has no metric 'no_such_metric'"):
        load_model("pyiqa:no_such_metric")
    with pytest.raises(ModelSpecError, match=r"path='/no/such/weights.pth'\) raised FileNotFoundError"):
        load_model("pyiqa:cnniqa(pretrained_model_path='/no/such/weights.pth')")
    with pytest.raises(ModelSpecError, match=r"raised TypeError: .*unexpected keyword argument 'colour'"):
        load_model("pyiqa:cnniqa(pretrained=None, colour=1)")


def test_certify_every_architecture(models, photos):
    for name, model in models.items():
        smoothed = SmoothedIQA(model, 0.1, n=4, alpha=0.3, batch_size=4, seed=0)
        samples = smoothed.sample(photos[:1])
        result = smoothed.certify(photos[:1], eps=0.01)  # n 4 at alpha 0.3: ranks 1 and 4
        assert bool(result.certified[0]), name
        expected = (samples[0, 0], samples[0, 1], samples[0, 3])  # seeded: certify draws the same samples
        assert (result.lower[0], result.median[0], result.upper[0]) == expected, name


def test_cli_certifies_photographs_with_an_untrained_topiq(shared_data, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in PHOTOS:
        Image.open(shared_data / "images" / name).crop((0, 0, 48, 48)).save(folder / name.split("/")[1])
    out = tmp_path / "r.csv"
    args = ["certify", str(folder), "--model", SPECS["topiq_nr"], "-n", "4", "--alpha", "0.3", "--eps", "0.01",
            "--seed", "0", "--quiet", "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2 and all(r["certified"] == "True" and r["randomized"] == "False" for r in rows)
    assert {r["model"] for r in rows} == {SPECS["topiq_nr"]} and {r["score_range"] for r in rows} == {"[0.0, 1.0]"}


def test_gradients_reach_the_input_and_attacks_run(models, photos):
    """as_loss=True keeps pyiqa's graph: every trainable architecture gives the input a
    finite, non-zero gradient, and an l2 attack (on a small and a large network) keeps its budget."""
    x = photos[:1]
    for name, model in models.items():
        image = x.clone().requires_grad_(True)
        model(image).sum().backward()
        assert image.grad is not None and torch.isfinite(image.grad).all(), name
        if name != "piqe":  # PIQE's block statistics are piecewise constant in places; finite is all it promises
            assert image.grad.abs().sum() > 0, name
    for name in ("cnniqa", "topiq_nr"):
        attack = PGDL2(models[name], 0.5, steps=1, direction="away", score_range=(0.0, 1.0), seed=0)
        adversarial = attack(x)
        assert adversarial.shape == x.shape and float((adversarial - x).flatten().norm()) <= 0.5 + 1e-5, name
        assert 0.0 <= float(adversarial.min()) and float(adversarial.max()) <= 1.0, name


def test_sigma_sweep_on_pyiqa_models(models, photos):
    images = [TrainImage(photos[i], float(i), f"p{i}") for i in range(2)]
    for name in ("cnniqa", "wadiqam_nr"):
        table = sweep_sigma(models[name], images, (0.05, 0.1), n=4, alpha=0.3, eps=(0.01,), progress=False)
        assert [(row["sigma"], row["denoiser"]) for row in table] == [(0.05, "none"), (0.1, "none")], name


def test_two_steps_of_denoiser_training_for_a_pyiqa_model(models, photos, tmp_path):
    model = models["cnniqa"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = [TrainImage(photos[i], float(i), f"p{i}") for i in range(2)]
    config = TrainConfig(sigma=0.1, steps=2, batch_size=2, crop=48, epoch_steps=1, checkpoint_every=1, val_n=2,
                         arch_config={"depth": 3, "features": 8, "batch_norm": False})
    result = train_denoiser(model, images, config, tmp_path, val_images=images, progress=False)
    assert result.step == 2 and (tmp_path / "denoiser.pt").is_file()
    with open(tmp_path / "train_log.csv") as fh:
        assert [row["step"] for row in csv.DictReader(fh)] == ["1", "2"]
    for key, value in model.state_dict().items():  # the IQA model itself is frozen
        assert torch.equal(value, before[key]), key
