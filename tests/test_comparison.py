"""A tiny end-to-end run of the defense comparison, its summary and its parts."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from certiqa import SmoothedIQA
from certiqa.comparison import (
    ComparisonConfig,
    ComparisonImage,
    ComparisonResult,
    Defense,
    format_markdown,
    format_summary,
    load_comparison_images,
    plot_comparison,
    run_comparison,
    summarize,
)
from certiqa.defenses import BitDepth, Purified, RandomRotation
from certiqa.models import CNNIQA
from conftest import REPO

TINY = ComparisonConfig(
    n=40, n_eval=10, n_check=60, alpha=0.2, sigma=0.1, linf_budgets=(4 / 255,), l2_budgets=(0.02, 0.5),
    attacks=("FGSM", "PGDL2", "Square"), transfer_attacks=("FGSM",), steps=2, eot_samples=2, queries=6,
    square_budgets=(4 / 255,), square_smoothed=True, check_images=None, fidelity_draws=2, batch_size=64,
)


def _images() -> list[ComparisonImage]:
    gen = torch.Generator().manual_seed(0)
    return [ComparisonImage(f"im{i}", torch.rand((3, 34, 34), generator=gen), human=h)
            for i, h in enumerate([0.2, 0.9, 0.5])]


@pytest.fixture(scope="module")
def tiny_result() -> ComparisonResult:
    """Five columns (plain, a BPDA purification, an EOT purification, smoothing with and
    without a denoiser) on three 34x34 images with every row family."""
    torch.manual_seed(0)
    base = CNNIQA(kernels=4, hidden=16).eval()
    denoiser = nn.AvgPool2d(3, 1, 1)
    defenses = [
        Defense("base", model=base),
        Defense("bits", model=Purified(base, BitDepth(3))),
        Defense("rotation", model=Purified(base, RandomRotation(10, seed=0))),
        Defense("smoothing", smoothed=SmoothedIQA(base, TINY.sigma)),
        Defense("smoothing + denoiser", smoothed=SmoothedIQA(base, TINY.sigma, denoiser=denoiser)),
    ]
    return run_comparison(defenses, _images(), TINY, score_range=(-10.0, 10.0), lower_better=True, progress=False)


def test_tiny_end_to_end(tiny_result, tmp_path):
    result = tiny_result
    names = result.defenses
    assert result.value("clean SROCC vs base (3 img)", "base") == pytest.approx(1.0)
    assert "clean PLCC vs human (3 img)" in {r["metric"] for r in result.rows}
    for name in names:
        for attack in ("FGSM linf 4/255", "PGDL2 l2 0.5", "Square (6 queries) linf 4/255"):
            change = result.value(f"{attack}: mean abs change", name)
            assert math.isfinite(change) and change >= 0
            assert math.isfinite(result.value(f"{attack}: R", name))
        assert result.value("FGSM linf 4/255: mean abs change", name) > 0
    # second objective: the base model sees the clean image; purifications and smoothing change it
    assert result.value("clean score shift vs base: mean abs", "base") == 0.0
    assert math.isinf(result.value("seen image vs clean: PSNR (dB)", "base"))
    assert result.value("seen image vs clean: SSIM", "base") == pytest.approx(1.0)
    for name in ("bits", "rotation", "smoothing", "smoothing + denoiser"):
        assert 0 < result.value("seen image vs clean: PSNR (dB)", name) < 60
        assert result.value("seen image vs clean: SSIM", name) < 1
        assert result.value("clean score shift vs base: mean abs", name) > 0
    # 3-bit depth: errors are at most half a level (1/14); PSNR >= 20 log10(14) = 22.9 dB
    assert result.value("seen image vs clean: PSNR (dB)", "bits") >= 20 * math.log10(14) - 1e-6
    # transferred (non-adaptive) rows on every column but the source
    with pytest.raises(KeyError):
        result.value("transfer from base: FGSM linf 4/255: mean abs change", "base")
    for name in names[1:]:
        assert math.isfinite(result.value("transfer from base: FGSM linf 4/255: mean abs change", name))
    for name in ("smoothing", "smoothing + denoiser"):
        cert = result.value("certified l2 0.02: width (certified/images)", name)
        assert cert.endswith("(3/3)")
        violations, certificates = result.value("soundness l2 0.02: violations/certificates", name).split()[0].split("/")
        assert int(certificates) == 3 and 0 <= int(violations) <= 3
        tight = result.value("tightness l2 0.02: attacked median shift / certified half-width", name)
        mean, rest = tight.split(" (max ")
        assert 0 <= float(mean) <= float(rest.split(";")[0]) and tight.endswith("; 3 img)")
        per_image = [r for r in result.rows if r["family"] == "tightness per image" and r["defense"] == name]
        assert [r["metric"] for r in per_image] == [f"tightness l2 0.02, im{i}: up / down" for i in range(3)]
        assert all(len(r["value"].split(" / ")) == 2 for r in per_image)
        assert result.value("certified l2 0.5: width (certified/images)", name) == "none/3"
        assert result.value("tightness l2 0.5: attacked median shift / certified half-width", name) == "n/a"
    with pytest.raises(KeyError):
        result.value("certified l2 0.02: width (certified/images)", "base")
    table = format_markdown(result)
    lines = table.splitlines()
    assert lines[0] == "| metric | base | bits | rotation | smoothing | smoothing + denoiser |"
    assert all(line.count("|") == 7 for line in lines)  # no stray pipes in metric names
    assert "| certified l2 0.02: width (certified/images) | — | — | — |" in table
    assert "im0: up / down" not in table  # per-image rows go to results.csv only
    summary = summarize(result)
    assert sorted(r["robustness_rank"] for r in summary) == list(range(1, 6))
    assert sorted(r["fidelity_rank"] for r in summary) == list(range(1, 6))
    assert any(r["pareto"] for r in summary)
    assert len(format_summary(result).splitlines()) == 2 + 5
    result.write_csv(tmp_path / "r.csv")
    assert (tmp_path / "r.csv").read_text().startswith("family,metric,budget,defense,value")


def test_plot(tiny_result, tmp_path):
    pytest.importorskip("matplotlib")
    plot_comparison(tiny_result, TINY, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_random_purification_is_scored_under_one_draw():
    """The clean and attacked scores of a random purification use the same draw, so a
    zero budget changes nothing; repeated runs give the same table."""
    torch.manual_seed(0)
    base = CNNIQA(kernels=4, hidden=16).eval()
    config = dataclasses.replace(TINY, linf_budgets=(0.0,), l2_budgets=(0.0,), attacks=("PGD", "PGDL2"),
                                 transfer_attacks=())
    defenses = [Defense("base", model=base), Defense("rotation", model=Purified(base, RandomRotation(20, seed=1)))]
    runs = [run_comparison(defenses, _images(), config, score_range=(-10.0, 10.0), lower_better=True, progress=False)
            for _ in range(2)]
    assert runs[0].value("PGD linf 0/255: mean abs change", "rotation") == 0.0
    assert runs[0].rows == runs[1].rows


def test_cpu_shortcuts_skip_square_on_smoothed_and_check_a_prefix():
    torch.manual_seed(0)
    base = CNNIQA(kernels=4, hidden=16).eval()
    config = dataclasses.replace(TINY, attacks=("PGDL2", "Square"), transfer_attacks=(), l2_budgets=(0.02,),
                                 square_smoothed=False, check_images=2)
    defenses = [Defense("base", model=base), Defense("smoothing", smoothed=SmoothedIQA(base, TINY.sigma))]
    result = run_comparison(defenses, _images(), config, score_range=(-10.0, 10.0), lower_better=True, progress=False)
    assert math.isfinite(result.value("Square (6 queries) linf 4/255: mean abs change", "base"))
    with pytest.raises(KeyError):
        result.value("Square (6 queries) linf 4/255: mean abs change", "smoothing")
    assert result.value("certified l2 0.02: width (certified/images)", "smoothing").endswith("(3/3)")
    assert result.value("soundness l2 0.02: violations/certificates", "smoothing").split()[0].endswith("/2")
    assert result.value("tightness l2 0.02: attacked median shift / certified half-width", "smoothing").endswith(
        "; 2 img)")


def test_summary_ranks_and_pareto():
    result = ComparisonResult(["a", "b", "c"])
    for name, change, ssim in (("a", 5.0, 1.0), ("b", 1.0, 0.8), ("c", 2.0, 0.7)):
        result.add("X linf 2/255: mean abs change", name, change, family="attack", budget="linf 2/255")
        result.add("X linf 4/255: mean abs change", name, 2 * change, family="attack", budget="linf 4/255")
        result.add("transfer from a: X linf 4/255: mean abs change", name, 3 * change, family="transfer",
                   budget="linf 4/255")
        result.add("seen image vs clean: SSIM", name, ssim, family="fidelity")
        result.add("seen image vs clean: PSNR (dB)", name, 30.0, family="fidelity")
    rows = {r["defense"]: r for r in summarize(result)}
    # worst change per budget (2 c at 2/255 and the transfer 3 c at 4/255), averaged: 2 c
    assert rows["b"]["worst_change"] == pytest.approx(2.0)
    assert [rows[k]["robustness_rank"] for k in "abc"] == [3, 1, 2]
    assert [rows[k]["fidelity_rank"] for k in "abc"] == [1, 2, 3]
    assert [rows[k]["pareto"] for k in "abc"] == [True, True, False]  # c: b is more robust and less degrading


def test_config_and_defense_errors():
    with pytest.raises(ValueError, match="n_check"):
        dataclasses.replace(TINY, n_check=10).check()
    with pytest.raises(ValueError, match="unknown attacks"):
        dataclasses.replace(TINY, attacks=("CW",)).check()
    with pytest.raises(ValueError, match="transfer_attacks"):
        dataclasses.replace(TINY, transfer_attacks=("PGD",)).check()
    with pytest.raises(ValueError, match="steps"):
        dataclasses.replace(TINY, steps=0).check()
    with pytest.raises(ValueError, match="queries"):
        dataclasses.replace(TINY, queries=1).check()
    with pytest.raises(ValueError, match="square_budgets"):
        dataclasses.replace(TINY, square_budgets=()).check()
    with pytest.raises(ValueError, match="check_images"):
        dataclasses.replace(TINY, check_images=0).check()
    with pytest.raises(ValueError, match="exactly one"):
        Defense("x")
    with pytest.raises(ValueError, match="at least one"):
        run_comparison([], _images(), TINY, score_range=(0, 1), lower_better=True)


def test_loads_labelled_images_first(shared_data):
    images = load_comparison_images(shared_data, 9, resize=40)
    assert [im.human is not None for im in images] == [True] * 8 + [False]
    assert all(0 <= im.human <= 1 for im in images[:8]) and min(images[0].image.shape[1:]) == 40
    live = {im.name: im.human for im in images}["live_img191.png"]  # DMOS 78.157 of 100, lower is better
    assert live == pytest.approx(1 - 0.78157)
    with pytest.raises(ValueError, match="asked for"):
        load_comparison_images(shared_data, 1000, resize=40)


def test_loads_every_image_by_default(tmp_path):
    from PIL import Image

    rows = ["file,dataset,score,scale_min,scale_max,higher_is_better,source,note"]
    for path, score in (("images/ladders/c.png", "0.9,0,1,1"), ("images/reference/b.png", ",,,"),
                        ("images/labelled/a.png", "30,0,100,0"), ("models/m.pt", ",,,")):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        if path.endswith(".png"):
            Image.new("RGB", (48, 40), (90, 120, 150)).save(tmp_path / path)
        rows.append(f"{path},x,{score},src,")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    images = load_comparison_images(tmp_path, resize=34)
    assert [im.name for im in images] == ["a.png", "b.png", "c.png"]  # labelled, reference, ladders; no weights
    assert images[0].human == pytest.approx(0.7) and images[1].human is None and images[2].human is None
    assert tuple(images[0].image.shape) == (3, 34, 41)


@pytest.mark.slow
def test_compare_defenses_script_runs_every_column(shared_data, tmp_path):
    """The script on 2 real images at 40 px with tiny settings: eleven columns (the shipped
    model stands in for the NT weights, the shipped DnCNN for the denoiser)."""
    done = subprocess.run(
        [sys.executable, "certify/compare_defenses.py", "--data", str(shared_data), "--images", "2", "--resize", "40",
         "--nt-weights", str(shared_data / "models" / "cnniqa-live.pt"),
         "--denoiser", "certiqa/weights/denoiser_dncnn_s012.pt", "--n", "20", "--n-eval", "4", "--n-check", "30",
         "--alpha", "0.2", "--attacks", "Square", "--queries", "3", "--device", "cpu", "--quiet",
         "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "table.md").read_text()
    assert table.startswith("Setting: 2 images (shorter side 40)")
    header = [line for line in table.splitlines() if line.startswith("| metric |")][0]
    assert header.count("|") == 13 and "| smoothing + denoiser |" in header and "| JPEG q75 |" in header
    assert "| Square (3 queries) linf 8/255: mean abs change |" in table and "| defense | worst-attack" in table
    assert (tmp_path / "results.csv").is_file()


def test_checkpointed_run_resumes_where_it_stopped(tmp_path):
    """A run whose third column raises keeps the two finished columns; resuming loads them
    (their models are not called again) and gives the rows of an uninterrupted run."""
    torch.manual_seed(0)
    base = CNNIQA(kernels=4, hidden=16).eval()
    config = dataclasses.replace(TINY, attacks=("FGSM",), l2_budgets=(0.02,), queries=6)
    calls = {"bits": 0}

    class Counting(nn.Module):
        def __init__(self, model: nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls["bits"] += 1
            return self.model(x)

    class Failing(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("stopped")

    def defenses(third: nn.Module) -> list[Defense]:
        return [Defense("base", model=base), Defense("bits", model=Counting(Purified(base, BitDepth(3)))),
                Defense("smoothing", smoothed=SmoothedIQA(third, config.sigma))]

    kwargs = dict(score_range=(-10.0, 10.0), lower_better=True, progress=False)
    whole = run_comparison(defenses(base), _images(), config, **kwargs)
    folder = tmp_path / "columns"
    with pytest.raises(RuntimeError, match="stopped"):
        run_comparison(defenses(Failing()), _images(), config, checkpoint=folder, **kwargs)
    assert sorted(p.name for p in folder.glob("column-*.pt")) == ["column-00.pt", "column-01.pt"]
    calls["bits"] = 0
    resumed = run_comparison(defenses(base), _images(), config, checkpoint=folder, resume=True, **kwargs)
    assert calls["bits"] == 0
    assert resumed.rows == whole.rows
    with pytest.raises(ValueError, match="another setting .*config"):
        run_comparison(defenses(base), _images(), dataclasses.replace(config, steps=3), checkpoint=folder,
                       resume=True, **kwargs)
