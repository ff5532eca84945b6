"""How the default model is trained (ladders, labels, loss, fitting, resume) and the
shared-data evaluation, on tiny synthetic photos (fast)."""

from __future__ import annotations

import math

import kornia
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from certiqa.distortions import distort_with
from certiqa.model_evaluation import evaluate_model, markdown_table, read_manifest
from certiqa.models.cnniqa import rgb_to_luma
from certiqa.models.default_training import (
    CROP,
    SEVERITY,
    VALIDATION_LADDERS,
    LadderConfig,
    Ladders,
    fit_default_model,
    ladder_loss,
    photo_scales,
    sample_ladders,
    severity_parameter,
    ssim_map,
)


def _photo(seed: int = 0, size: tuple[int, int] = (140, 150)) -> torch.Tensor:
    """A smooth colour gradient with fine random texture, (3, H, W) in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size[0]), torch.linspace(0, 1, size[1]), indexing="ij")
    smooth = torch.stack((torch.sin(7 * xx) * 0.3 + 0.5, torch.cos(5 * yy) * 0.3 + 0.5, xx * 0.6 + 0.2))
    return (smooth + 0.25 * torch.rand(smooth.shape, generator=gen)).clamp(0, 1)


def test_ssim_map_matches_kornia_valid_and_is_one_for_identical_images() -> None:
    x = _photo()[None, :, :40, :44].double()  # float64: both sides exact to ~1e-12
    y = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)).clamp(0, 1)
    expected = kornia.metrics.ssim(rgb_to_luma(x), rgb_to_luma(y), 11, max_val=1.0, padding="valid")
    got = ssim_map(x, y)
    assert got.shape == (1, 1, 30, 34)
    assert torch.allclose(got, expected, atol=1e-9)
    assert float(got.mean()) < 0.9
    assert torch.allclose(ssim_map(x, x), torch.ones(1, 1, 30, 34, dtype=x.dtype), atol=1e-9)
    with pytest.raises(ValueError, match="same shape|one shape"):
        ssim_map(x, y[..., :40])


def test_severity_parameter_ends_midpoints_and_integers() -> None:
    for name, (mild, strong, _) in SEVERITY.items():
        assert severity_parameter(name, 0.0) == pytest.approx(mild)
        assert severity_parameter(name, 1.0) == pytest.approx(strong)
        for u in (0.0, 0.37, 1.0):  # every parameter on the scale is one distort_with accepts
            distort_with(torch.zeros(1, 3, 16, 16), name, severity_parameter(name, u))
    assert severity_parameter("gaussian_blur", 0.5) == pytest.approx(math.sqrt(0.3 * 5.0))  # log scale
    assert severity_parameter("contrast", 0.5) == pytest.approx((0.9 + 0.15) / 2)  # linear
    assert severity_parameter("motion_blur", 0.5) == 15.0
    with pytest.raises(ValueError, match="no severity scale for 'brightness'"):
        severity_parameter("brightness", 0.5)
    with pytest.raises(ValueError, match="severity must be in \\[0, 1\\]"):
        severity_parameter("jpeg", 1.5)


@settings(deadline=None)
@given(st.sampled_from(sorted(SEVERITY)), st.floats(0, 1), st.floats(0, 1))
def test_severity_parameter_is_monotone_and_valid(name: str, u: float, v: float) -> None:
    lo, hi = sorted((u, v))
    mild, strong, _ = SEVERITY[name]
    sign = 1.0 if strong > mild else -1.0
    assert sign * severity_parameter(name, lo) <= sign * severity_parameter(name, hi)
    if name == "motion_blur":
        assert severity_parameter(name, u) % 2 == 1


def test_photo_scales_rounds_to_8_bits_and_skips_small_versions() -> None:
    out = photo_scales([_photo(size=(140, 150)), _photo(size=(300, 260))], (1.0, 0.5))
    assert [tuple(p.shape) for p in out] == [(3, 140, 150), (3, 300, 260), (3, 150, 130)]
    assert all(p.dtype == torch.uint8 for p in out)
    assert torch.equal(out[0], (_photo(size=(140, 150)) * 255).round().to(torch.uint8))
    with pytest.raises(ValueError, match="scales must be factors in \\(0, 1\\]"):
        photo_scales([_photo()], (1.5,))
    with pytest.raises(ValueError, match="no photo is at least 128 px"):
        photo_scales([_photo(size=(100, 100))], (1.0,))


@pytest.fixture(scope="module")
def ladders() -> Ladders:
    return sample_ladders(photo_scales([_photo()], (1.0,)), 5, 3, torch.Generator().manual_seed(0), group=2)


def test_ladders_layout_labels_and_determinism(ladders: Ladders) -> None:
    assert ladders.images.shape == (5, 4, 3, CROP, CROP) and ladders.images.dtype == torch.uint8
    assert ladders.labels.shape == (5, 4) and len(ladders) == 5
    assert torch.allclose(ladders.labels[:, 0], torch.full((5,), 100.0), atol=1e-3)  # rung 0 is the pristine crop
    assert float(ladders.labels.min()) >= 0.0 and float(ladders.labels.max()) <= 100.0 + 1e-3
    assert set(ladders.distortion) <= set(SEVERITY)
    assert ladders.distortion[0] == ladders.distortion[1]  # a group shares its distortion
    again = sample_ladders(photo_scales([_photo()], (1.0,)), 5, 3, torch.Generator().manual_seed(0), group=2)
    assert torch.equal(again.images, ladders.images) and torch.equal(again.labels, ladders.labels)


def test_blur_ladders_fall_strictly_with_the_rung() -> None:
    blur = sample_ladders(photo_scales([_photo()], (1.0,)), 4, 4, torch.Generator().manual_seed(3),
                          distortions=("gaussian_blur",))
    assert (blur.labels[:, :-1] > blur.labels[:, 1:]).all(), blur.labels


def test_camera_like_references_stay_the_reference() -> None:
    bank = photo_scales([_photo()], (1.0,))
    plain = sample_ladders(bank, 8, 2, torch.Generator().manual_seed(4), group=1)
    camera = sample_ladders(bank, 8, 2, torch.Generator().manual_seed(4), group=1, grain=0.02, sharpen=1.0)
    assert torch.allclose(camera.labels[:, 0], torch.full((8,), 100.0), atol=1e-3)
    # same crops and severities, but some references carry grain or sharpening
    changed = (camera.images[:, 0].float() - plain.images[:, 0].float()).abs().flatten(1).amax(dim=1) > 0
    assert 0 < int(changed.sum()) < 8


def test_sample_ladders_errors() -> None:
    bank = photo_scales([_photo()], (1.0,))
    with pytest.raises(ValueError, match="distortions must be names from"):
        sample_ladders(bank, 2, 2, torch.Generator(), distortions=("saturation",))
    with pytest.raises(ValueError, match="rungs must be an integer >= 1"):
        sample_ladders(bank, 2, 0, torch.Generator())


def test_ladder_batch_flips_and_rotates_without_changing_labels(ladders: Ladders) -> None:
    index = torch.tensor([0, 2])
    plain, labels = ladders.batch(index)
    assert plain.dtype == torch.float32 and plain.shape == (2, 4, 3, CROP, CROP)
    assert torch.equal(plain, ladders.images[index].float() / 255.0) and torch.equal(labels, ladders.labels[index])
    moved, labels2 = ladders.batch(index, torch.Generator().manual_seed(5))
    assert torch.equal(labels2, labels)
    assert torch.equal(moved.flatten(2).sort(dim=2).values, plain.flatten(2).sort(dim=2).values)  # same pixels


def test_ladder_loss_closed_form() -> None:
    labels = torch.tensor([[100.0, 90.0, 50.0]])
    reversed_pred = torch.tensor([[0.0, 10.0, 20.0]])
    total, terms = ladder_loss(reversed_pred, labels, rank_weight=2.0, margin=5.0, min_gap=0.5)
    # hinges max(0, 5 - (pred_i - pred_j)): 5 + 10 = 15, 5 + 20 = 25, 5 + 10 = 15
    assert terms["rank"] == pytest.approx(55.0 / 3) and terms["pairs"] == 3.0
    assert terms["l1"] == pytest.approx(70.0)
    assert float(total) == pytest.approx(70.0 + 2.0 * 55.0 / 3)
    ordered = torch.tensor([[100.0, 94.0, 60.0]])  # every predicted gap >= the margin 5
    assert ladder_loss(ordered, labels, rank_weight=1.0, margin=5.0, min_gap=0.5)[1]["rank"] == 0.0
    # the margin is constant: a mild distortion (label gap 1) must still cost 5 points
    _, mild = ladder_loss(torch.tensor([[90.0, 88.0]]), torch.tensor([[100.0, 99.0]]), rank_weight=1.0,
                          margin=5.0, min_gap=0.5)
    assert mild["rank"] == pytest.approx(3.0)
    # versions whose labels differ by less than min_gap are not ranked
    _, none = ladder_loss(torch.tensor([[0.0, 9.0]]), torch.tensor([[100.0, 99.9]]), rank_weight=1.0, margin=5.0,
                          min_gap=0.5)
    assert none["pairs"] == 0.0 and none["rank"] == 0.0
    assert float(ladder_loss(torch.tensor([[0.0, 9.0]]), torch.tensor([[100.0, 99.9]]), rank_weight=1.0, margin=5.0,
                             min_gap=0.5)[0]) == pytest.approx((100.0 + 90.9) / 2)
    with pytest.raises(ValueError, match="must both be \\(ladders, rungs\\)"):
        ladder_loss(torch.zeros(3), torch.zeros(3), rank_weight=1.0, margin=5.0, min_gap=0.5)


def test_ladder_config_errors() -> None:
    with pytest.raises(ValueError, match="bank must be an integer >= 1"):
        LadderConfig(bank=0)
    with pytest.raises(ValueError, match="rank_weight"):
        LadderConfig(rank_weight=-1.0)
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        LadderConfig(lr=0.0)


_TINY = LadderConfig(steps=4, ladders=2, rungs=2, bank=4, kernels=4, hidden=8, scales=(1.0,))


def test_fit_logs_validation_and_returns_a_higher_better_model() -> None:
    logged: list[str] = []
    result = fit_default_model([_photo()], _TINY, val_photos=[_photo(1)], val_ladders=3, log_every=2,
                               log=logged.append, progress=False)
    assert result.model.lower_better is False and not result.model.training
    assert result.model.score_range == (0.0, 100.0)
    assert [h["step"] for h in result.history] == [2.0, 4.0]
    entry = result.history[-1]
    assert set(VALIDATION_LADDERS) == {k.removeprefix("image_srocc_") for k in entry if k.startswith("image_srocc_")}
    assert 0.0 <= entry["pair_accuracy"] <= 1.0 and -1.0 <= entry["image_srocc"] <= 1.0
    assert logged[0].startswith("4 training ladders") and "l1=" in logged[1]


class _Interrupt(Exception):
    pass


def test_resume_gives_the_uninterrupted_weights(tmp_path) -> None:
    straight = fit_default_model([_photo()], _TINY, log_every=2, log=lambda _: None, progress=False)

    def crash_at_step_2(line: str) -> None:
        if line.startswith("step=2"):
            raise _Interrupt

    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(_Interrupt):
        fit_default_model([_photo()], _TINY, log_every=2, checkpoint=ckpt, checkpoint_every=1, log=crash_at_step_2,
                          progress=False)
    resumed = fit_default_model([_photo()], _TINY, log_every=2, checkpoint=ckpt, checkpoint_every=1, resume=True,
                                log=lambda _: None, progress=False)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
    assert [(h["step"], h["l1"]) for h in resumed.history] == [(h["step"], h["l1"]) for h in straight.history]
    with pytest.raises(ValueError, match="other settings"):
        fit_default_model([_photo()], LadderConfig(**{**_TINY.__dict__, "lr": 0.01}), checkpoint=ckpt, resume=True,
                          progress=False)
    with pytest.raises(ValueError, match="needs the checkpoint path"):
        fit_default_model([_photo()], _TINY, resume=True, progress=False)


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


def test_evaluation_of_a_plain_callable_with_an_explicit_orientation(tmp_path) -> None:
    _fake_data(tmp_path)
    module = evaluate_model(_Brightness(lower_better=False), tmp_path)
    plain = evaluate_model(lambda x: x.mean(dim=(1, 2, 3)), tmp_path, lower_better=False)
    assert plain.ladder_goodness == pytest.approx(module.ladder_goodness) and len(plain.ladder_goodness) == 8
    assert plain.ladder_by_distortion == pytest.approx({"gblur": 1.0, "jpeg": -1.0})
    flipped = evaluate_model(_Brightness(lower_better=False), tmp_path, lower_better=True)
    assert flipped.ladder_goodness == pytest.approx([-v for v in module.ladder_goodness])
    assert flipped.labelled_srocc == pytest.approx(-1.0)


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
