"""The sigma sweep: library rows against independent computations, human-score reading,
and the command end to end on two small images."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from certiqa import SmoothedIQA, metrics
from certiqa.denoisers import SubpixelDnCNN, save_denoiser
from certiqa.denoisers.training import TrainImage
from certiqa.models import CNNIQA
from certiqa.sweep import format_sweep, read_human_scores, sweep_sigma

REPO = Path(__file__).resolve().parents[1]


def _images(count: int) -> list[TrainImage]:
    g = torch.Generator().manual_seed(0)
    return [TrainImage((torch.rand(3, 40, 44, generator=g) * (0.3 + 0.2 * i)).clamp(0, 1), None, f"im{i}.png")
            for i in range(count)]


def _model() -> CNNIQA:
    """A randomly initialised CNNIQA of the published shape (what --weights loads)."""
    torch.manual_seed(0)
    return CNNIQA().eval()


class Darkness(torch.nn.Module):
    """100 x (1 - mean pixel): a lower-better score that moves with the images and the noise."""

    lower_better = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 100 * (1 - x.mean(dim=(1, 2, 3)))


def test_sweep_rows_match_smoothed_iqa_and_metrics():
    model, images = Darkness(), _images(4)
    shrink = SubpixelDnCNN(scale=2, depth=2, features=2)
    torch.nn.init.constant_(shrink.body[-1].bias, 0.05)  # D(z) = clamp(z - 0.05): not the identity
    human = {"im0.png": 3.0, "im1.png": 1.0, "im3.png": 2.0}
    table = sweep_sigma(model, images, [0.1, 0.2], denoisers={0.2: shrink}, human=human, n=32, alpha=0.05,
                        eps=[0.01], seed=3, progress=False)
    assert [(r["sigma"], r["denoiser"]) for r in table] == [(0.1, "none"), (0.2, "none"), (0.2, "yes")]
    x = torch.stack([im.image for im in images])
    with torch.no_grad():
        clean = model(x).numpy()
    for row, denoiser in zip(table, (None, None, shrink)):
        smoothed = SmoothedIQA(model, row["sigma"], n=32, alpha=0.05, seed=3, denoiser=denoiser)
        medians = torch.cat([smoothed.predict(im.image[None]) for im in images]).numpy()
        widths = torch.cat([smoothed.certify(im.image[None], 0.01).width for im in images]).numpy()
        assert row["images"] == 4 and row["srocc"] == pytest.approx(metrics.srocc(medians, clean))
        assert row["shift"] == pytest.approx(float(np.abs(medians - clean).mean()), rel=1e-5)
        assert row["width_0.01"] == pytest.approx(float(widths.mean()), rel=1e-5) and row["certified_0.01"] == 1
        goodness = -medians[[0, 1, 3]]  # a lower-better model: medians negated against human scores
        assert row["human_images"] == 3 and row["srocc_human"] == pytest.approx(metrics.srocc(goodness, [3, 1, 2]))
    text = format_sweep(table, [0.01])
    assert text.splitlines()[0].startswith("| sigma | denoiser | SROCC vs clean") and "SROCC vs human" in text


def test_sweep_errors():
    model, images = _model(), _images(2)
    with pytest.raises(ValueError, match="does not run"):
        sweep_sigma(model, images, [0.1], denoisers={0.2: SubpixelDnCNN()}, n=4, progress=False)
    with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
        sweep_sigma(model, images, [0.1, -0.1], n=4, progress=False)
    with pytest.raises(ValueError, match="at least one image"):
        sweep_sigma(model, [], [0.1], n=4, progress=False)


def test_read_human_scores_maps_each_scale_to_goodness(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "file,score,scale_min,scale_max,higher_is_better\n"
        "a/dmos.png,25,0,100,0\n"  # DMOS, lower is better: goodness 0.75
        "a/mos.png,4.5,0,9,1\n"  # MOS 0-9: goodness 0.5
        "a/raw.png,7,,,\n"  # no scale: as is
        "a/none.png,,,,\n"  # unscored: skipped
        "b/other.png,1,0,1,1\n"
    )
    assert read_human_scores(manifest) == {"a/dmos.png": 0.75, "a/mos.png": 0.5, "a/raw.png": 7.0, "b/other.png": 1.0}
    assert read_human_scores(manifest, ["a/"]) == {"a/dmos.png": 0.75, "a/mos.png": 0.5, "a/raw.png": 7.0}
    (tmp_path / "bad.csv").write_text("path,score\nx.png,1\n")
    with pytest.raises(ValueError, match="'file' column"):
        read_human_scores(tmp_path / "bad.csv")


def _script():
    spec = importlib.util.spec_from_file_location("sweep_sigma_script", REPO / "certify" / "sweep_sigma.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _two_images(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((40, 48, 3)) * (120 + 100 * i)).astype(np.uint8)).save(folder / f"im{i}.png")
    manifest = folder / "manifest.csv"
    manifest.write_text("file,score\nim0.png,10\nim1.png,20\n")
    return manifest


def test_sweep_command_end_to_end_on_two_small_images(tmp_path, capsys):
    manifest = _two_images(tmp_path / "data")
    weights, den = tmp_path / "w.pt", tmp_path / "d.pt"
    torch.save(_model().state_dict(), weights)
    save_denoiser(SubpixelDnCNN(scale=2, depth=2, features=2), den, sigma=0.06)
    out, plot = tmp_path / "out" / "sweep.csv", tmp_path / "out" / "sweep.png"
    code = _script().main([str(manifest), "--weights", str(weights), "--denoiser", f"0.06={den}", "--n", "16",
                           "--alpha", "0.05", "--eps", "0.005", "0.02", "--threads", "1", "--quiet", "--out", str(out),
                           "--plot", str(plot)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "2 images, n 16" in printed and "| 0.06 | yes |" in printed and "| 0.25 | none |" in printed
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["sigma"], r["denoiser"]) for r in rows] == [
        ("0.03", "none"), ("0.06", "none"), ("0.06", "yes"), ("0.12", "none"), ("0.25", "none")]
    assert all(math.isnan(float(r["srocc"])) and r["human_images"] == "2" for r in rows)  # < 3 images: undefined
    # n 16, alpha 0.05: every sigma certifies both radii (ranks 1..16 at worst); a larger eps, a wider interval
    assert all(float(r["certified_0.02"]) == 1 and float(r["width_0.005"]) <= float(r["width_0.02"]) for r in rows)
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:4] == b"\x89PNG"


def test_sweep_command_errors(tmp_path):
    manifest = _two_images(tmp_path / "data")
    weights, den = tmp_path / "w.pt", save_denoiser(SubpixelDnCNN(scale=2, depth=2, features=2), tmp_path / "d.pt")
    torch.save(_model().state_dict(), weights)
    with pytest.raises(SystemExit, match="SIGMA=FILE"):
        _script().main([str(manifest), "--denoiser", str(den)])
    with pytest.raises(SystemExit, match="does not run"):
        _script().main([str(manifest), "--sigma", "0.1", "--denoiser", f"0.2={den}"])
    with pytest.raises(SystemExit, match="trained for the default model"):
        _script().main([str(manifest), "--weights", str(weights), "--denoiser", "pretrained"])
