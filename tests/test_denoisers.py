"""Denoisers, their files, losses, training (with resume after a real kill) and the
certificate of denoised smoothing."""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from certiqa import SmoothedIQA
from certiqa.denoisers import DnCNN, SubpixelDnCNN, UNet, load_denoiser, pretrained, read_denoiser_meta, save_denoiser
from certiqa.denoisers.evaluation import fingerprint, median_agreement, oracle_records, smoothed_records, summarise
from certiqa.metrics import grouped_srocc
from certiqa.denoisers.training import (
    TrainConfig,
    TrainImage,
    load_images,
    train_denoiser,
)
from certiqa.losses import LossWeights, combined_loss, correlation_loss, image_mse, ranking_loss, score_fidelity
from certiqa.models import CNNIQA, LoadedModel

REPO = Path(__file__).resolve().parents[1]
TINY = {"depth": 3, "features": 8, "batch_norm": False}


# ---------------------------------------------------------------- architectures


@pytest.mark.parametrize("net", [
    DnCNN(depth=4, features=8), DnCNN(depth=3, features=8, batch_norm=False), UNet(features=4, levels=2),
    SubpixelDnCNN(scale=2, depth=3, features=8), SubpixelDnCNN(scale=3, depth=4, features=6, separable=True),
    SubpixelDnCNN(scale=2, depth=3, features=8, context=4),
])
@pytest.mark.parametrize("shape", [(2, 3, 17, 23), (1, 1, 32, 40)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtypes_and_identity_at_init(net, shape, dtype):
    channels = shape[1]
    net = type(net)(channels, **{k: v for k, v in net.config.items() if k != "channels"}).to(dtype).eval()
    x = torch.rand(shape, dtype=dtype)
    y = net(x)
    assert y.shape == x.shape and y.dtype == dtype
    assert torch.allclose(y, x)  # zero-initialised last layer: D starts as the identity


def test_denoiser_output_clamped_and_trains_away_from_identity():
    torch.manual_seed(0)
    net = DnCNN(depth=3, features=8, batch_norm=False)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    clean = torch.rand(2, 3, 12, 12)
    noisy = (clean + 0.3 * torch.randn_like(clean)).clamp(0, 1)
    first = image_mse(net(noisy), clean).item()
    for _ in range(10):
        opt.zero_grad()
        image_mse(net(noisy), clean).backward()
        opt.step()
    out = net(noisy)
    assert image_mse(out, clean).item() < first
    assert out.min() >= 0 and out.max() <= 1


def test_default_dncnn_is_the_paper_config():
    net = DnCNN()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 17 and convs[0].out_channels == 64
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())


@pytest.mark.parametrize("bad", [{"depth": 1}, {"features": 0}, {"channels": 2.5}])
def test_dncnn_rejects_bad_config(bad):
    with pytest.raises(ValueError, match="DnCNN"):
        DnCNN(**bad)


def test_unet_rejects_bad_config():
    with pytest.raises(ValueError, match="UNet levels"):
        UNet(levels=0)


@pytest.mark.parametrize("bad", [{"scale": 0}, {"depth": 1}, {"features": 2.5}, {"channels": True}, {"context": -1}])
def test_subpixel_dncnn_rejects_bad_config(bad):
    with pytest.raises(ValueError, match="SubpixelDnCNN " + next(iter(bad))):
        SubpixelDnCNN(**bad)


def test_subpixel_dncnn_macs_by_hand_and_by_flop_counter():
    """3 -> 12 channels at 5x5 positions (10x9 padded to 10x10); convs 12->4, 4->4, 4->12 of 3x3:
    (432 + 144 + 432) * 25 MACs. The separable layer is 4 * 9 (depthwise) + 4 * 4 (pointwise)."""
    from torch.utils.flop_counter import FlopCounterMode

    assert SubpixelDnCNN(scale=2, depth=3, features=4).macs(10, 9) == (432 + 144 + 432) * 25
    assert SubpixelDnCNN(scale=2, depth=3, features=4, separable=True).macs(10, 9) == (432 + 36 + 16 + 432) * 25
    assert SubpixelDnCNN(scale=2, depth=3, features=4, context=3).macs(10, 9) == 1008 * 25 + 4 * 3 + 3 * 8
    for net in (SubpixelDnCNN(scale=2, depth=5, features=24), SubpixelDnCNN(scale=4, depth=4, features=16, separable=True),
                SubpixelDnCNN(scale=2, depth=4, features=8, context=5)):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(torch.rand(1, 3, 61, 75))
        assert counter.get_total_flops() == 2 * net.macs(61, 75)


def test_subpixel_dncnn_context_is_per_image_and_modulates():
    torch.manual_seed(0)
    net = SubpixelDnCNN(scale=2, depth=3, features=6, context=4)
    for p in net.parameters():
        p.data.normal_(0, 0.3)
    x = torch.rand(3, 3, 14, 18)
    out = net(x)
    for i in range(3):  # one image at a time: the rest of the batch never matters
        torch.testing.assert_close(net(x[i : i + 1]), out[i : i + 1])
    plain = SubpixelDnCNN(scale=2, depth=3, features=6)
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("context.")})
    assert not torch.allclose(plain(x), out)  # the context MLP changes the output
    torch.nn.init.zeros_(net.context[-1].weight)
    torch.nn.init.zeros_(net.context[-1].bias)
    torch.testing.assert_close(net(x), plain(x))  # zero modulation = the plain network


def test_subpixel_dncnn_scale_one_is_a_dncnn_without_batch_norm():
    torch.manual_seed(0)
    sub, plain = SubpixelDnCNN(scale=1, depth=4, features=6), DnCNN(depth=4, features=6, batch_norm=False)
    for p in sub.parameters():
        p.data.normal_(0, 0.2)
    plain.load_state_dict(sub.state_dict())
    x = torch.rand(2, 3, 13, 11)
    torch.testing.assert_close(sub(x), plain(x))


# ---------------------------------------------------------------- files


@pytest.mark.parametrize("net", [DnCNN(depth=3, features=8), UNet(features=4, levels=1),
                                 SubpixelDnCNN(scale=2, depth=3, features=8, separable=True)])
def test_checkpoint_round_trip(tmp_path, net):
    torch.manual_seed(1)
    for p in net.parameters():
        p.data.normal_(0, 0.1)
    net.eval()
    path = save_denoiser(net, tmp_path / "d.pt", sigma=0.12, base_model="cnniqa")
    loaded = load_denoiser(path)
    x = torch.rand(2, 3, 20, 20)
    assert type(loaded) is type(net) and not loaded.training
    assert torch.equal(loaded(x), net(x))
    assert loaded.meta == {"sigma": 0.12, "base_model": "cnniqa"}
    assert read_denoiser_meta(path)["arch"] == {DnCNN: "dncnn", UNet: "unet", SubpixelDnCNN: "subpixel_dncnn"}[type(net)]
    torch.load(path, weights_only=True)  # plain tensors and Python values only


def test_bad_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_denoiser(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match=r"not a PyTorch file .* expected a denoiser file written by "
                                         r"certiqa\.denoisers\.save_denoiser\.$"):
        load_denoiser(garbage)
    plain = tmp_path / "plain.pt"
    torch.save(DnCNN(depth=3).state_dict(), plain)
    with pytest.raises(ValueError, match="not a certiqa denoiser file"):
        load_denoiser(plain)
    good = save_denoiser(DnCNN(depth=3, features=8), tmp_path / "good.pt")
    record = torch.load(good, weights_only=True)
    record["config"]["features"] = 16
    torch.save(record, tmp_path / "shapes.pt")
    with pytest.raises(ValueError, match="wrong shape"):
        load_denoiser(tmp_path / "shapes.pt")
    record["arch"] = "resnet"
    torch.save(record, tmp_path / "arch.pt")
    with pytest.raises(ValueError, match="unknown denoiser architecture"):
        load_denoiser(tmp_path / "arch.pt")
    with pytest.raises(TypeError, match="save_denoiser saves"):
        save_denoiser(torch.nn.Conv2d(3, 3, 1), tmp_path / "x.pt")


@pytest.mark.parametrize("sigma", [0.06, 0.12, 0.25])
def test_pretrained_denoisers_ship_for_the_default_model(sigma):
    den = pretrained(sigma)
    assert isinstance(den, SubpixelDnCNN) and not den.training
    assert den.config == {"channels": 3, "scale": 2, "depth": 5, "features": 24, "separable": False, "context": 0,
                          "clamp": True}
    assert den.meta["sigma"] == [sigma, sigma] and den.meta["base_model"] == "default"
    weights = den.meta["loss_weights"]
    assert weights["rank"] > 0 and weights["fidelity"] > 0  # ranking, and score fidelity to keep the level
    x = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = den(x)
    assert out.shape == x.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_pretrained_denoiser_keeps_the_default_models_order_on_the_examples():
    """Clean default-model scores order chelsea (clean) above coffee (blurred); so does the
    smoothed median with the shipped sigma-0.12 denoiser, and it is far closer to the clean level."""
    from certiqa.io import load_image
    from certiqa.models import default_model

    model = default_model()
    folder = Path(__file__).resolve().parents[1] / "examples" / "images"
    x = torch.stack([load_image(folder / name) for name in ("chelsea_clean.png", "coffee_blur3.png")])
    with torch.no_grad():
        clean = model(x)
    plain = SmoothedIQA(model, 0.12, n=24, seed=0).predict(x)
    denoised = SmoothedIQA(model, 0.12, n=24, seed=0, denoiser=pretrained(0.12)).predict(x)
    assert clean[0] > clean[1] and denoised[0] > denoised[1]
    assert (denoised - clean).abs().max() < (plain - clean).abs().min()


def test_pretrained_unknown_sigma():
    with pytest.raises(ValueError, match="no pretrained denoiser for sigma=0.5"):
        pretrained(0.5)


# ---------------------------------------------------------------- losses

# distinct targets at least 1/8 apart, so that adding a constant cannot merge two of them by rounding
scores = st.lists(st.integers(-400, 400), min_size=2, max_size=12, unique=True).map(lambda v: [i / 8 for i in v])


@settings(max_examples=60, deadline=None)
@given(target=scores, margin=st.floats(0, 2), gap=st.floats(0.01, 3))
def test_ranking_zero_for_ordered_batch_beyond_margin(target, margin, gap):
    t = torch.tensor(target, dtype=torch.float64)
    ranks = t.argsort().argsort().double()
    pred = ranks * (margin + gap)  # consecutive ranks more than `margin` apart
    assert ranking_loss(pred, t, margin).item() == 0.0


@settings(max_examples=60, deadline=None)
@given(target=scores, pred=st.lists(st.floats(-50, 50), min_size=12, max_size=12), c=st.floats(-100, 100), margin=st.floats(0, 2))
def test_ranking_invariant_to_constants(target, pred, c, margin):
    t = torch.tensor(target, dtype=torch.float64)
    p = torch.tensor(pred[: len(target)], dtype=torch.float64)
    base = ranking_loss(p, t, margin)
    assert torch.allclose(ranking_loss(p + c, t, margin), base, atol=1e-9)
    assert torch.allclose(ranking_loss(p, t + c, margin), base, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(target=scores, margin=st.floats(0, 2), scale=st.floats(0.01, 5))
def test_ranking_positive_for_reversed_batch(target, margin, scale):
    t = torch.tensor(target, dtype=torch.float64)
    assert ranking_loss(-scale * t, t, margin).item() > 0


def test_ranking_ignores_ties_and_matches_hand_value():
    t = torch.tensor([1.0, 1.0, 2.0])
    p = torch.tensor([5.0, 0.0, 1.0])
    # pairs with t_i > t_j: (2, 0) gap -4, (2, 1) gap 1; the tie (0, 1) is ignored
    assert ranking_loss(p, t, margin=0.5).item() == pytest.approx((4.5 + 0.0) / 2)
    assert ranking_loss(p, torch.ones(3)).item() == 0.0  # no ordered pair


@settings(max_examples=40, deadline=None)
@given(target=scores, a=st.floats(0.1, 10), b=st.floats(-10, 10))
def test_correlation_loss_affine_invariant(target, a, b):
    t = torch.tensor(target, dtype=torch.float64)
    assert correlation_loss(a * t + b, t).item() == pytest.approx(0.0, abs=1e-6)
    assert correlation_loss(-a * t + b, t).item() == pytest.approx(2.0, abs=1e-6)


def test_fidelity_and_loss_errors():
    assert score_fidelity(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 1.0])).item() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="same length"):
        ranking_loss(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="margin"):
        ranking_loss(torch.zeros(3), torch.zeros(3), margin=-1)
    with pytest.raises(ValueError, match="at least 2"):
        correlation_loss(torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="differ in shape"):
        image_mse(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match="all loss weights are zero"):
        LossWeights(mse=0)
    with pytest.raises(ValueError, match="rank must be"):
        LossWeights(rank=-1)


def test_combined_loss_is_the_weighted_sum():
    clean = torch.rand(3, 3, 8, 8)
    den = clean + 0.1
    p, t = torch.tensor([1.0, 2.0, 0.0]), torch.tensor([0.0, 1.0, 2.0])
    w = LossWeights(mse=2, fidelity=0.5, rank=3, corr=0.25, margin=0.1)
    total, terms = combined_loss(den, clean, p, t, w)
    expected = 2 * image_mse(den, clean) + 0.5 * score_fidelity(p, t) + 3 * ranking_loss(p, t, 0.1) + 0.25 * correlation_loss(p, t)
    assert total.item() == pytest.approx(expected.item())
    assert set(terms) == {"mse", "fidelity", "rank", "corr"}


def test_gradients_reach_denoiser_never_base_model():
    torch.manual_seed(0)
    base = CNNIQA(4, 8).eval()
    for p in base.parameters():
        p.requires_grad_(False)
    den = DnCNN(depth=3, features=8, batch_norm=False)
    for p in den.parameters():  # leave the identity start so every layer gets a gradient
        p.data.normal_(0, 0.05)
    x = torch.rand(4, 3, 40, 40)
    z = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    out = den(z)
    with torch.no_grad():
        target = base(x)
    loss, _ = combined_loss(out, x, base(out), target, LossWeights(mse=0, rank=1, corr=1, fidelity=1))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in den.parameters())
    assert all(p.grad is None for p in base.parameters())


# ---------------------------------------------------------------- certificate with a denoiser


class Linear(torch.nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(shape, dtype=torch.float64), requires_grad=False)

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1)


def test_denoised_certificate_is_that_of_the_composite_and_holds():
    torch.manual_seed(0)
    shape = (3, 6, 6)
    f = Linear(shape)
    den = DnCNN(depth=3, features=4, batch_norm=False).double().eval()
    for p in den.parameters():
        p.data.normal_(0, 0.3)
    x = torch.rand(1, *shape, dtype=torch.float64) * 0.6 + 0.2
    sigma, eps = 0.25, 0.1
    with_d = SmoothedIQA(f, sigma, n=2000, alpha=0.001, batch_size=2000, denoiser=den, seed=3).certify(x, eps)
    composite = SmoothedIQA(lambda z: f(den(z)), sigma, n=2000, alpha=0.001, batch_size=2000, seed=3).certify(x, eps)
    assert torch.equal(with_d.lower, composite.lower) and torch.equal(with_d.upper, composite.upper)
    assert bool(with_d.certified.all())
    # the smoothed median of perturbed inputs (population estimated with many samples) stays in the interval
    big = SmoothedIQA(f, sigma, n=20000, batch_size=5000, denoiser=den, seed=7)
    for _ in range(4):
        d = torch.randn_like(x)
        d = eps * d / d.norm()
        m = float(big.predict((x + d).clamp(0, 1)))
        assert float(with_d.lower) <= m <= float(with_d.upper)


# ---------------------------------------------------------------- data, models, evaluation


def _write_images(folder: Path, count: int, size=(44, 48)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        smooth = rng.random((size[0] // 4, size[1] // 4, 3))
        arr = np.kron(smooth, np.ones((4, 4, 1))) * (0.3 + 0.7 * i / count) + rng.random((*size, 3)) * 0.2 * i / count
        Image.fromarray((255 * arr.clip(0, 1)).astype(np.uint8)).save(folder / f"im{i}.png")


def test_load_images_folder_and_manifest(tmp_path):
    _write_images(tmp_path / "imgs", 3)
    folder = load_images(tmp_path / "imgs")
    assert [im.name for im in folder] == ["im0.png", "im1.png", "im2.png"] and folder[0].score is None
    (tmp_path / "m.csv").write_text("file,score\nimgs/im0.png,1.5\nimgs/im1.png,\nmodel.pt,\n")
    rows = load_images(tmp_path / "m.csv", resize=20)
    assert [im.score for im in rows] == [1.5, None] and min(rows[0].image.shape[-2:]) == 20
    with pytest.raises(FileNotFoundError):
        load_images(tmp_path / "nothing")
    with pytest.raises(ValueError, match="no images"):
        load_images(tmp_path / "imgs", include=["zzz"])


def test_ladder_srocc_and_summary():
    mean, used = grouped_srocc([1, 2, 3, 3, 2, 1, 5], [1, 2, 3, 1, 2, 3, 0], ["a", "a", "a", "b", "b", "b", "c"])
    assert used == 2 and mean == pytest.approx(0.0)
    rows = [{"name": f"images/ladders/x_{i}.png", "score": float(i), "clean": float(i), "median": float(-i),
             "width_0.1": 1.0 if i else math.inf} for i in range(6)]
    s = summarise(rows, [0.1], ladder_of={r["name"]: "x" for r in rows}, lower_better=True)
    assert s["srocc"] == pytest.approx(-1.0) and s["ladder_srocc"] == pytest.approx(1.0)
    assert s["width_0.1"] == 1.0 and s["certified_0.1"] == pytest.approx(5 / 6)


def test_summary_human_shift_and_undefined_correlations():
    rows = [{"name": n, "score": None, "clean": c, "median": m, "width_0.1": 2.0}
            for n, c, m in (("a", 1.0, 2.0), ("b", 2.0, 1.5), ("c", 3.0, 4.0), ("d", 4.0, 3.0))]
    s = summarise(rows, [0.1], lower_better=True, human={"a": 0.9, "b": 0.8, "c": 0.1})
    assert s["shift"] == pytest.approx((1.0 + 0.5 + 1.0 + 1.0) / 4)
    assert s["srocc"] == pytest.approx(0.6)  # ranks (2, 1, 4, 3) against (1, 2, 3, 4): 1 - 6 * 4 / 60
    assert s["human_images"] == 3 and s["srocc_human"] == pytest.approx(0.5)  # -median (-2, -1.5, -4) vs (.9, .8, .1)
    assert "ladder_srocc" not in s
    two = summarise(rows[:2], [0.1], lower_better=False, human={"a": 1.0})
    assert math.isnan(two["srocc"]) and math.isnan(two["plcc"]) and math.isnan(two["srocc_human"])
    assert two["width_0.1"] == 2.0 and two["certified_0.1"] == 1.0


def test_median_agreement_by_hand():
    rows = [{"name": n, "median": m, "clean": c} for n, m, c in (("a", 1.0, 1.0), ("b", 2.0, 2.0), ("c", 3.0, 3.0),
                                                                 ("d", 4.0, 4.0))]
    reference = [{"name": n, "median": m, "clean": c} for n, m, c in (("d", 4.5, 4.0), ("b", 1.0, 2.0),
                                                                      ("c", 3.0, 3.0))]
    a = median_agreement(rows, reference)
    # small medians (4, 2, 3) against large (4.5, 1, 3): same order; clean (4, 2, 3)
    assert a["images"] == 3 and a["srocc_between"] == pytest.approx(1.0)
    assert a["mean_abs_difference"] == pytest.approx((0.5 + 1.0 + 0.0) / 3) and a["max_abs_difference"] == 1.0
    assert a["srocc"] == pytest.approx(1.0) and a["srocc_reference"] == pytest.approx(1.0)
    swapped = median_agreement(rows, [dict(r, median=-r["median"]) for r in reference])
    assert swapped["srocc_between"] == pytest.approx(-1.0) and swapped["srocc_reference"] == pytest.approx(-1.0)
    assert math.isnan(median_agreement(rows, reference[:2])["srocc_between"])  # 2 pairs: undefined
    with pytest.raises(ValueError, match=r"missing \['e'\] \(1 in all\)"):
        median_agreement(rows, reference + [{"name": "e", "median": 0.0, "clean": 0.0}])


def test_smoothed_records_cache_resumes_and_refuses_other_settings(tmp_path, monkeypatch):
    torch.manual_seed(0)
    f = CNNIQA(4, 8).eval()
    ims = [TrainImage(torch.rand(3, 40, 40), None, f"dir/im{i}.png") for i in range(3)]
    first = smoothed_records(f, ims[:2], 0.1, 16, 0.01, [0.05], seed=1, cache_dir=tmp_path, progress=False)
    assert len(list(tmp_path.glob("*.pt"))) == 2

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled although the cache holds the image")

    monkeypatch.setattr(SmoothedIQA, "sample", no_sampling)
    assert smoothed_records(f, ims[:2], 0.1, 16, 0.01, [0.05], seed=1, cache_dir=tmp_path, progress=False) == first
    monkeypatch.undo()
    again = smoothed_records(f, ims, 0.1, 16, 0.01, [0.05], seed=1, cache_dir=tmp_path, progress=False)
    fresh = smoothed_records(f, ims, 0.1, 16, 0.01, [0.05], seed=1, progress=False)
    assert again == fresh and again[:2] == first  # two images read back, the third drawn
    with pytest.raises(ValueError, match="other settings"):
        smoothed_records(f, ims, 0.1, 16, 0.01, [0.05], seed=2, cache_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        smoothed_records(f, ims, 0.1, 16, 0.01, [0.05], seed=1, denoiser=DnCNN(depth=2, features=2),
                         cache_dir=tmp_path, progress=False)
    resized = [TrainImage(torch.rand(3, 36, 40), None, "dir/im0.png")]
    with pytest.raises(ValueError, match="of shape"):
        smoothed_records(f, resized, 0.1, 16, 0.01, [0.05], seed=1, cache_dir=tmp_path, progress=False)


def test_fingerprint_tells_weights_apart():
    torch.manual_seed(0)
    a, b = DnCNN(depth=2, features=2), DnCNN(depth=2, features=2)
    assert fingerprint(a) != fingerprint(b) and fingerprint(None) == "none"
    b.load_state_dict(a.state_dict())
    assert fingerprint(a) == fingerprint(b)


def test_smoothed_records_widths_match_certify():
    torch.manual_seed(0)
    f = CNNIQA(4, 8).eval()
    ims = [TrainImage(torch.rand(3, 40, 40), None, "a")]
    rows = smoothed_records(f, ims, 0.1, 64, 0.01, [0.05], seed=2, progress=False)
    cert = SmoothedIQA(f, 0.1, n=64, alpha=0.01, seed=2).certify(ims[0].image[None], 0.05)
    assert rows[0]["width_0.05"] == pytest.approx(float(cert.width[0]))
    assert rows[0]["median"] == pytest.approx(float(cert.median[0]))


# ---------------------------------------------------------------- training


def _tiny_images(count=5) -> list[TrainImage]:
    g = torch.Generator().manual_seed(0)
    return [TrainImage(torch.rand(3, 44, 48, generator=g), float(i), f"t{i}") for i in range(count)]


def test_two_step_training_run(tmp_path):
    torch.manual_seed(0)
    model = CNNIQA(4, 8)
    cfg = TrainConfig(sigma=(0.05, 0.2), steps=2, batch_size=3, crop=36, arch_config=TINY, epoch_steps=1,
                      checkpoint_every=1, val_n=4, weights=LossWeights(mse=1, rank=0.1, corr=0.1, fidelity=0.1))
    res = train_denoiser(model, _tiny_images(), cfg, tmp_path, val_images=_tiny_images(4), progress=False)
    assert res.step == 2 and not res.denoiser.training
    assert all(p.grad is None for p in model.parameters())
    with open(tmp_path / "train_log.csv") as fh:
        log = list(csv.DictReader(fh))
    assert [r["step"] for r in log] == ["1", "2"] and all(math.isfinite(float(r["rank"])) for r in log)
    with open(tmp_path / "val_log.csv") as fh:
        val = list(csv.DictReader(fh))
    assert len(val) == 2 and -1 <= float(val[-1]["srocc_base"]) <= 1
    meta = read_denoiser_meta(tmp_path / "denoiser.pt")
    assert meta["sigma"] == [0.05, 0.2] and meta["steps"] == 2
    with pytest.raises(ValueError, match="different settings"):
        train_denoiser(model, _tiny_images(), TrainConfig(sigma=0.3, steps=3, crop=36, arch_config=TINY), tmp_path,
                       resume=True, progress=False)


def test_training_keeps_the_best_validation_weights(tmp_path):
    """denoiser_best.pt holds the weights of the validation with the highest SROCC (first of ties):
    equal to a run stopped at that step; a resumed run keeps the same best."""
    torch.manual_seed(0)
    model = CNNIQA(4, 8)
    cfg = TrainConfig(sigma=0.1, steps=6, batch_size=3, crop=36, arch_config=TINY, epoch_steps=1,
                      checkpoint_every=1, val_n=4, lr=0.05)
    val = _tiny_images(7)
    res = train_denoiser(model, _tiny_images(), cfg, tmp_path / "a", val_images=val, progress=False,
                         keep_validated=True)
    with open(tmp_path / "a" / "val_log.csv") as fh:
        rows = [(int(r["step"]), float(r["srocc_base"])) for r in csv.DictReader(fh)]
    best_step, best = max(rows, key=lambda r: r[1])  # max keeps the first of ties
    kept = sorted(p.name for p in (tmp_path / "a").glob("denoiser_step*.pt"))
    assert kept == [f"denoiser_step{s:06d}.pt" for s in range(1, 7)]  # keep_validated: one file per validation
    for step, srocc in rows:
        assert read_denoiser_meta(tmp_path / "a" / f"denoiser_step{step:06d}.pt")["val_srocc_base"] == srocc
    meta = read_denoiser_meta(tmp_path / "a" / "denoiser_best.pt")
    assert meta["steps"] == best_step == res.best_validation["step"] and meta["val_srocc_base"] == best
    stopped = train_denoiser(model, _tiny_images(), dataclasses.replace(cfg, steps=best_step), tmp_path / "b",
                             val_images=val, progress=False)
    best_weights = load_denoiser(tmp_path / "a" / "denoiser_best.pt").state_dict()
    step_weights = load_denoiser(tmp_path / "a" / f"denoiser_step{best_step:06d}.pt").state_dict()
    for key, value in stopped.denoiser.state_dict().items():
        assert torch.equal(value, best_weights[key]) and torch.equal(value, step_weights[key]), key
    assert not list((tmp_path / "b").glob("denoiser_step*.pt"))  # not kept by default
    train_denoiser(model, _tiny_images(), dataclasses.replace(cfg, steps=2), tmp_path / "c", val_images=val,
                   progress=False)
    train_denoiser(model, _tiny_images(), cfg, tmp_path / "c", val_images=val, resume=True, progress=False)
    assert read_denoiser_meta(tmp_path / "c" / "denoiser_best.pt")["steps"] == best_step


def test_training_starts_from_init_denoiser(tmp_path):
    """init= starts from a trained denoiser; an architecture mismatch is refused."""
    torch.manual_seed(0)
    model = CNNIQA(4, 8)
    base = TrainConfig(sigma=0.1, steps=1, batch_size=3, crop=36, arch_config=TINY, checkpoint_every=1)
    first = train_denoiser(model, _tiny_images(), base, tmp_path / "a", progress=False)
    zero_lr = dataclasses.replace(base, lr=1e-12, init=str(tmp_path / "a" / "denoiser.pt"))
    second = train_denoiser(model, _tiny_images(), zero_lr, tmp_path / "b", progress=False)
    for a, b in zip(first.denoiser.state_dict().values(), second.denoiser.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)  # started there, and (lr ~ 0) stayed there
    other = dataclasses.replace(zero_lr, arch_config={**TINY, "features": TINY["features"] + 1})
    with pytest.raises(ValueError, match="init denoiser"):
        train_denoiser(model, _tiny_images(), other, tmp_path / "c", progress=False)


def test_context_run_starts_from_a_denoiser_without_context(tmp_path):
    """A SubpixelDnCNN run with context=K may start from the same denoiser without context: the
    shared layers are copied and the zero-initialised context is a no-op, so the start computes
    exactly the init's function. Other differences are still refused."""
    torch.manual_seed(0)
    model = CNNIQA(4, 8)
    plain = {"scale": 2, "depth": 3, "features": 6}
    base = TrainConfig(sigma=0.1, steps=1, batch_size=3, crop=36, arch="subpixel_dncnn", arch_config=plain,
                       checkpoint_every=1)
    first = train_denoiser(model, _tiny_images(), base, tmp_path / "a", progress=False)
    init = str(tmp_path / "a" / "denoiser.pt")
    with_context = dataclasses.replace(base, arch_config={**plain, "context": 4}, lr=1e-30, init=init)
    second = train_denoiser(model, _tiny_images(), with_context, tmp_path / "b", progress=False)
    x = torch.rand(2, 3, 20, 22, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(second.denoiser.eval()(x), first.denoiser.eval()(x))
    assert set(second.denoiser.state_dict()) - set(first.denoiser.state_dict()) == {
        "context.0.weight", "context.0.bias", "context.2.weight", "context.2.bias"}
    wider = dataclasses.replace(with_context, arch_config={**plain, "features": 7, "context": 4})
    with pytest.raises(ValueError, match="the same, or the same with context added"):
        train_denoiser(model, _tiny_images(), wider, tmp_path / "c", progress=False)


def test_cosine_learning_rate_schedule(tmp_path):
    torch.manual_seed(0)
    cfg = TrainConfig(sigma=0.1, steps=4, batch_size=2, crop=36, arch="subpixel_dncnn",
                      arch_config={"scale": 2, "depth": 2, "features": 4}, lr=0.01, lr_schedule="cosine",
                      checkpoint_every=4)
    train_denoiser(CNNIQA(4, 8), _tiny_images(), cfg, tmp_path, progress=False)
    with open(tmp_path / "train_log.csv") as fh:
        lrs = [float(r["lr"]) for r in csv.DictReader(fh)]
    assert lrs == pytest.approx([0.01, 0.01 * (1 + 2**-0.5) / 2, 0.005, 0.01 * (1 - 2**-0.5) / 2])
    assert read_denoiser_meta(tmp_path / "denoiser.pt")["lr_schedule"] == "cosine"


def test_training_config_errors():
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(sigma=0.1, steps=1, lr_schedule="step")
    with pytest.raises(ValueError, match="min <= max"):
        TrainConfig(sigma=(0.2, 0.1), steps=1)
    with pytest.raises(ValueError, match="targets"):
        TrainConfig(sigma=0.1, steps=1, targets="mos")
    with pytest.raises(ValueError, match="smaller than the 64px crop"):
        train_denoiser(CNNIQA(4, 8), _tiny_images(), TrainConfig(sigma=0.1, steps=1, crop=64), "/tmp/unused", progress=False)


def _train_cmd(data: Path, weights: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "denoisers" / "train.py"), "--model", f"cnniqa:{weights}", "--data", str(data),
            "--sigma", "0.05", "0.2", "--steps", str(steps), "--batch-size", "4", "--crop", "36",
            "--arch-config", '{"depth": 3, "features": 8, "batch_norm": false}', "--w-rank", "0.1",
            "--checkpoint-every", "1", "--threads", "1", "--quiet", "--out", str(out), *extra]


def _step_of(ckpt: Path) -> int:
    try:
        return int(torch.load(ckpt, weights_only=True)["step"])
    except (FileNotFoundError, RuntimeError, EOFError, KeyError):
        return 0


def test_resume_after_kill_equals_uninterrupted_run(tmp_path):
    data, weights = tmp_path / "data", tmp_path / "base.pt"
    _write_images(data, 6)
    torch.manual_seed(0)
    torch.save(CNNIQA(4, 8).state_dict(), weights)
    steps = 150
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(data, weights, straight, steps), check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(data, weights, killed, steps), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while _step_of(killed / "checkpoint.pt") < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    still_running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    reached = _step_of(killed / "checkpoint.pt")
    assert still_running and 3 <= reached < steps, f"the kill came too late (step {reached})"
    assert not (killed / "denoiser.pt").exists()
    subprocess.run(_train_cmd(data, weights, killed, steps, "--resume"), check=True, env=env, capture_output=True)

    a, b = load_denoiser(straight / "denoiser.pt"), load_denoiser(killed / "denoiser.pt")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    logs = []
    for run in (straight, killed):
        with open(run / "train_log.csv") as fh:
            logs.append([{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(fh)])
    assert logs[0] == logs[1] and len(logs[0]) == steps


def _evaluate_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("denoisers_evaluate", REPO / "denoisers" / "evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_evaluate_script_end_to_end_with_bootstrap(tmp_path, capsys):
    data, weights, den = tmp_path / "data", tmp_path / "base.pt", tmp_path / "den.pt"
    _write_images(data, 8)
    torch.manual_seed(0)
    torch.save(CNNIQA(4, 8).state_dict(), weights)
    save_denoiser(DnCNN(depth=3, features=8, batch_norm=False), den)
    out = tmp_path / "eval" / "eval.csv"
    argv = ["--data", str(data), "--model", f"cnniqa:{weights}", "--denoiser", f"id={den}", "--n", "12",
            "--width-n", "16", "--width-images", "3", "--eps", "0.02", "--bootstrap", "100", "--threads", "1",
            "--cache", str(tmp_path / "cache"), "--quiet", "--out", str(out)]
    assert _evaluate_script().main(argv) == 0
    printed = capsys.readouterr().out
    assert "| plain |" in printed and "| id |" in printed and "SROCC id - plain:" in printed
    assert "widths from n 16 on 3 images" in printed
    assert "Medians at n 12 against n 16 on the 3 width images" in printed and printed.count("| plain | ") == 2
    with open(out) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * (8 + 3) and {r["config"] for r in rows} == {"plain", "id"}
    assert sorted({r["name"] for r in rows if r["n"] == "16"}) == ["im0.png", "im4.png", "im7.png"]  # evenly spaced: 0, 3.5, 7
    import json

    summary = json.loads(out.with_suffix(".json").read_text())
    assert [d["metric"] for d in summary["differences"]] == ["SROCC", "PLCC raw", "KROCC"]
    assert all(d["low"] <= d["difference"] <= d["high"] for d in summary["differences"])
    plain = summary["summaries"][0]
    widths = [float(r["width_0.02"]) for r in rows if r["config"] == "plain" and r["n"] == "16"]
    assert plain["width_0.02"] == pytest.approx(sum(widths) / 3) and plain["human_images"] == 0
    small = {r["name"]: float(r["median"]) for r in rows if r["config"] == "plain" and r["n"] == "12"}
    large = [(small[r["name"]], float(r["median"])) for r in rows if r["config"] == "plain" and r["n"] == "16"]
    assert plain["median_agreement"]["mean_abs_difference"] == pytest.approx(sum(abs(a - b) for a, b in large) / 3)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["id", "plain"]
    assert sorted(p.name for p in (tmp_path / "cache" / "plain").iterdir()) == ["n12", "n16"]
    assert _evaluate_script().main(argv) == 0  # a second run reads every sample back from the cache
    assert json.loads(out.with_suffix(".json").read_text())["summaries"][0]["srocc"] == plain["srocc"]


def test_evaluate_script_width_batch_size(tmp_path, capsys):
    """--width-batch-size draws the widths' samples in batches of that size (its own cache folder, since
    the noise depends on the batch size): the rows equal smoothed_records at that batch size."""
    data, weights = tmp_path / "data", tmp_path / "base.pt"
    _write_images(data, 4)
    torch.manual_seed(0)
    torch.save(CNNIQA(4, 8).state_dict(), weights)
    out = tmp_path / "eval.csv"
    argv = ["--data", str(data), "--model", f"cnniqa:{weights}", "--n", "8", "--width-n", "16", "--width-images", "2",
            "--batch-size", "8", "--width-batch-size", "3", "--eps", "0.02", "--bootstrap", "0", "--threads", "1",
            "--cache", str(tmp_path / "cache"), "--quiet", "--out", str(out)]
    assert _evaluate_script().main(argv) == 0
    assert sorted(p.name for p in (tmp_path / "cache" / "plain").iterdir()) == ["n16_b3", "n8"]
    with open(out) as fh:
        rows = [r for r in csv.DictReader(fh) if r["n"] == "16"]
    images = [im for im in load_images(str(data), min_size=33) if im.name in {"im0.png", "im3.png"}]
    expected = smoothed_records(CNNIQA.from_file(weights, kernels=4, hidden=8), images, 0.12, 16, 0.001, [0.02], seed=0, batch_size=3,
                                progress=False)
    assert [float(r["median"]) for r in rows] == pytest.approx([r["median"] for r in expected])
    with pytest.raises(SystemExit, match="--width-batch-size must be >= 1"):
        _evaluate_script().main(argv[:-2] + ["--width-batch-size", "0"])


def test_evaluate_script_no_plain(tmp_path, capsys):
    data, weights, den = tmp_path / "data", tmp_path / "base.pt", tmp_path / "den.pt"
    _write_images(data, 3)
    torch.save(CNNIQA(4, 8).state_dict(), weights)
    save_denoiser(DnCNN(depth=2, features=4, batch_norm=False), den)
    argv = ["--data", str(data), "--model", f"cnniqa:{weights}", "--n", "4", "--bootstrap", "0", "--threads", "1",
            "--quiet", "--no-plain", "--out", str(tmp_path / "e.csv")]
    assert _evaluate_script().main(argv + ["--denoiser", f"d={den}"]) == 0
    printed = capsys.readouterr().out
    assert "| d |" in printed and "| plain |" not in printed
    with pytest.raises(SystemExit, match="--no-plain leaves nothing to evaluate"):
        _evaluate_script().main(argv)


def test_evaluate_script_refuses_a_tiny_bootstrap(tmp_path):
    with pytest.raises(SystemExit, match="--bootstrap must be 0"):
        _evaluate_script().main(["--data", str(tmp_path), "--bootstrap", "50"])


# ---------------------------------------------------------------- shipped CNNIQA-LIVE denoisers

SHIPPED_LIVE = ["cnniqa_live_sigma0.12.pt", "cnniqa_live_sigma0.12_mse.pt"]


def _cnniqa_macs(model: CNNIQA, height: int, width: int) -> int:
    """CNNIQA's multiply-adds from its layer shapes: per 32x32 patch, the 7x7 conv over 26x26
    outputs and the three fully connected layers; patches at rows range(0, H - 32, 32)."""
    patches = len(range(0, height - 32, 32)) * len(range(0, width - 32, 32))
    per_patch = model.conv1.weight.numel() * 26 * 26 + sum(fc.weight.numel() for fc in (model.fc1, model.fc2, model.fc3))
    return patches * per_patch


@pytest.mark.parametrize("name", SHIPPED_LIVE)
def test_shipped_cnniqa_live_denoisers_load_run_and_cost_at_most_3_cnniqa(name):
    path = REPO / "denoisers" / "weights" / name
    assert path.stat().st_size < 200_000
    den = load_denoiser(path)
    assert type(den) is SubpixelDnCNN and den.meta["sigma"] == [0.12, 0.12]
    assert den.meta["base_model"].endswith("cnniqa-live.pt") and den.meta["targets"] == "base"
    x = torch.rand(2, 3, 41, 47)
    with torch.no_grad():
        y = den(x)
    assert y.shape == x.shape and y.dtype == x.dtype and 0 <= float(y.min()) and float(y.max()) <= 1
    assert not torch.equal(y, x)  # trained: not the identity
    ratio = den.macs(384, 512) / _cnniqa_macs(CNNIQA(), 384, 512)
    assert ratio <= 3, f"{name} costs {ratio:.2f} CNNIQA forward passes per 512x384 image"


def test_cnniqa_macs_match_the_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    model = CNNIQA().eval().to("meta")  # shapes only: nothing is computed
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.empty(1, 3, 100, 130, device="meta"))
    # 3 x 4 patches; per patch 50 x 49 x 26^2 conv + 100 x 800 + 800 x 800 + 800 fc multiply-adds
    assert counter.get_total_flops() == 2 * _cnniqa_macs(model, 100, 130) == 2 * 12 * (1_656_200 + 720_800)


def test_certify_command_takes_a_live_denoiser_file_with_live_weights(shared_data, tmp_path):
    from certiqa.cli import main

    den_path = REPO / "denoisers" / "weights" / "cnniqa_live_sigma0.12.pt"
    image = tmp_path / "crop.png"
    Image.open(shared_data / "images" / "labelled" / "live_img66.png").crop((0, 0, 80, 72)).save(image)
    out = tmp_path / "r.json"
    weights = shared_data / "models" / "cnniqa-live.pt"
    assert main(["certify", str(image), "--weights", str(weights), "--denoiser", str(den_path), "--n", "16",
                 "--alpha", "0.1", "--eps", "0.01", "--seed", "0", "--quiet", "--out", str(out)]) == 0
    import json

    (row,) = json.loads(out.read_text())
    from certiqa.io import load_image

    from certiqa.runner import image_noise_seed

    smoothed = SmoothedIQA(CNNIQA.from_file(weights), 0.12, n=16, alpha=0.1, seed=0, denoiser=load_denoiser(den_path))
    samples = smoothed.sample(load_image(image)[None], seed=image_noise_seed(0, row["image_sha256"]))  # per-image noise
    assert row["median"] == pytest.approx(float(samples[0, 7]), abs=1e-4)  # y_(ceil(16/2))


def test_fingerprint_sees_through_loaded_model_and_refuses_callables():
    inner = DnCNN(depth=2, features=2)
    wrapped = LoadedModel(inner, spec="x", file=None, lower_better=None, score_range=None, min_size=1)
    assert fingerprint(wrapped) == fingerprint(inner)
    with pytest.raises(TypeError, match="needs an nn.Module"):
        fingerprint(lambda z: z.mean((1, 2, 3)))
    with pytest.raises(TypeError, match="needs an nn.Module"):
        fingerprint(LoadedModel(lambda z: z, spec="x", file=None, lower_better=None, score_range=None, min_size=1))


def test_shipped_default_mse_denoiser_loads_runs_and_costs_at_most_3_cnniqa():
    """The default model's MSE-only denoiser, shipped for the issue-10 comparison (MSE only vs ranking)."""
    path = REPO / "denoisers" / "weights" / "default_sigma0.12_mse.pt"
    den = load_denoiser(path)
    assert type(den) is SubpixelDnCNN and den.meta["sigma"] == [0.12, 0.12] and den.meta["base_model"] == "default"
    assert den.meta["loss_weights"]["rank"] == 0 and den.meta["loss_weights"]["fidelity"] == 0  # MSE only
    x = torch.rand(2, 3, 41, 47)
    with torch.no_grad():
        y = den(x)
    assert y.shape == x.shape and not torch.equal(y, x)
    assert den.macs(384, 512) / _cnniqa_macs(CNNIQA(), 384, 512) <= 3


class _Contrast(torch.nn.Module):
    """Score = the mean squared deviation of each pixel from its right neighbour (blur lowers it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[..., 1:] - x[..., :-1]).pow(2).flatten(1).mean(1)


def test_oracle_records_against_independent_references():
    """noise_<r> is SmoothedIQA(model, r).predict; blur_<b> is the model on a Gaussian blur computed
    here by hand (separable kernel of half-width ceil(3b), reflected borders)."""
    model, images = _Contrast(), _tiny_images(3)
    rows = oracle_records(model, images, [0.01, 0.05], [0.5, 1.3], n=6, seed=3, batch_size=4, progress=False)
    assert [r["name"] for r in rows] == [im.name for im in images]
    assert set(rows[0]) == {"name", "clean", "noise_0.01", "noise_0.05", "blur_0.5", "blur_1.3"}
    for row, im in zip(rows, images):
        x = im.image.unsqueeze(0)
        assert row["clean"] == float(model(x))
        for r in (0.01, 0.05):
            assert row[f"noise_{r:g}"] == float(SmoothedIQA(model, r, n=6, batch_size=4, seed=3).predict(x)[0])
        for b in (0.5, 1.3):
            half = math.ceil(3 * b)
            t = torch.arange(-half, half + 1, dtype=torch.float32)
            g = torch.exp(-t ** 2 / (2 * b * b))
            g = g / g.sum()
            padded = torch.nn.functional.pad(x, (half, half, half, half), mode="reflect")
            c = x.shape[1]
            y = torch.nn.functional.conv2d(padded, g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
            y = torch.nn.functional.conv2d(y, g.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
            assert row[f"blur_{b:g}"] == pytest.approx(float(model(y)), rel=1e-5)
            assert row[f"blur_{b:g}"] < row["clean"]  # blur lowers the contrast score
    assert rows[0]["blur_1.3"] < rows[0]["blur_0.5"]


def test_oracle_records_errors():
    model, images = _Contrast(), _tiny_images(1)
    for bad in ([0.0], [-0.1], [math.nan], ["0.1"]):
        with pytest.raises(ValueError, match="residual_stds must be positive finite numbers"):
            oracle_records(model, images, bad, [], progress=False)
    with pytest.raises(ValueError, match="blur_sigmas must be positive finite numbers"):
        oracle_records(model, images, [0.1], [0], progress=False)
    with pytest.raises(ValueError, match="at least one residual std or blur sigma"):
        oracle_records(model, images, [], [], progress=False)


def test_oracle_bound_script(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    script = Path(__file__).resolve().parents[1] / "denoisers" / "oracle_bound.py"
    run = subprocess.run([sys.executable, str(script), "--data", str(tmp_path), "--model", "default", "--residual",
                          "0.01", "--blur", "0.5", "--n", "2", "--quiet", "--out", str(tmp_path / "o.csv")],
                         capture_output=True, text=True, check=True)
    lines = run.stdout.splitlines()
    assert lines[0] == "4 images, n 2, noise seed 0"
    assert lines[4].startswith("| clean + white noise, std 0.01 | ") and lines[5].startswith("| clean, Gaussian blur")
    with open(tmp_path / "o.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["name", "clean", "noise_0.01", "blur_0.5"] and len(rows) == 4
    failed = subprocess.run([sys.executable, str(script), "--data", str(tmp_path), "--model", "default", "--residual",
                             "-1", "--quiet"], capture_output=True, text=True)
    assert failed.returncode == 1 and "residual_stds must be positive finite numbers" in failed.stderr


# ----------------------------------------------------------------------------- denoiser sigma / base_model check


@pytest.fixture
def trained_at_010(tmp_path):
    """A denoiser file recording sigma 0.10 (a range [0.08, 0.12] for the second) and base model 'default'."""
    net = DnCNN(depth=3, features=8, batch_norm=False)
    save_denoiser(net, tmp_path / "d.pt", sigma=[0.1, 0.1], base_model="default")
    save_denoiser(net, tmp_path / "range.pt", sigma=[0.08, 0.12], base_model="default")
    return tmp_path


@pytest.mark.parametrize("sigma, name, warned", [(0.1, "d.pt", False), (0.1 * (1 + 5e-7), "d.pt", False),
                                                 (0.1 * (1 + 5e-6), "d.pt", True), (0.25, "d.pt", True),
                                                 (0.05, "d.pt", True), (0.08, "range.pt", False),
                                                 (0.12, "range.pt", False), (0.121, "range.pt", True)])
def test_smoothed_iqa_warns_on_a_denoiser_of_another_sigma(trained_at_010, sigma, name, warned):
    from certiqa.denoisers import DenoiserMismatchWarning
    from certiqa.models import load_model

    model, denoiser = load_model("default"), load_denoiser(trained_at_010 / name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SmoothedIQA(model, sigma, denoiser=denoiser)
    found = [w for w in caught if issubclass(w.category, DenoiserMismatchWarning)]
    assert len(found) == int(warned)
    if warned:
        assert f"used at sigma {sigma:g}" in str(found[0].message) and "\n" not in str(found[0].message)


def test_smoothed_iqa_warns_on_a_denoiser_of_another_model(trained_at_010, shared_data, tmp_path):
    from certiqa.denoisers import DenoiserMismatchWarning
    from certiqa.models import load_model
    from certiqa.models.default import DEFAULT_WEIGHTS

    denoiser = load_denoiser(trained_at_010 / "d.pt")
    live = load_model(f"cnniqa:{shared_data / 'models/cnniqa-live.pt'}")
    with pytest.warns(DenoiserMismatchWarning, match=r"was trained for model 'default', used with 'cnniqa:.*cnniqa-live"
                                                     r"\.pt'; the certificates stay valid"):
        SmoothedIQA(live, 0.1, denoiser=denoiser)
    save_denoiser(DnCNN(depth=3, features=8, batch_norm=False), tmp_path / "file.pt", sigma=0.1,
                  base_model=f"cnniqa:{DEFAULT_WEIGHTS}")
    copy = tmp_path / "copy.pt"
    copy.write_bytes(DEFAULT_WEIGHTS.read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SmoothedIQA(load_model(f"cnniqa:{copy}"), 0.1, denoiser=load_denoiser(tmp_path / "file.pt"))  # same bytes
        SmoothedIQA(live, 0.3, denoiser=DnCNN(depth=3, features=8, batch_norm=False))  # no file: nothing recorded
        SmoothedIQA(lambda x: live(x), 0.12, denoiser=pretrained(0.12))  # a callable without a spec: sigma only
    with pytest.warns(DenoiserMismatchWarning, match="trained for model 'default'"):
        SmoothedIQA(live, 0.12, denoiser=pretrained(0.12))


def test_the_cli_warns_on_a_mismatched_denoiser_in_one_line(trained_at_010, capsys):
    from certiqa.cli import main

    Image.new("RGB", (40, 40), (100, 80, 60)).save(trained_at_010 / "a.png")
    base = ["certify", str(trained_at_010 / "a.png"), "--n", "10", "--alpha", "0.1", "--quiet"]
    assert main([*base, "--sigma", "0.1", "--denoiser", str(trained_at_010 / "d.pt")]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main([*base, "--sigma", "0.25", "--denoiser", str(trained_at_010 / "d.pt")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert lines == ["certiqa: warning: the denoiser was trained at sigma 0.1, used at sigma 0.25; the certificates "
                     "stay valid, but a denoiser trained for this sigma and model (denoisers/train.py) likely gives "
                     "narrower ones."]
