"""NT regulariser, gradient norms and the training loop."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from certiqa.defenses import nt


class Smooth(nn.Module):
    """A small smooth model: images (B, 1, 4, 4) -> (B,)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(16, 8).double()
        self.fc2 = nn.Linear(8, 1).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x.flatten(1)))).reshape(-1)


def _double_backprop_r(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(xg).sum(), xg, create_graph=True)
    return (grad.flatten(1).abs().sum(dim=1) ** 2).mean()


def test_regulariser_agrees_with_double_backprop_to_first_order():
    model = Smooth()
    x = torch.rand((5, 1, 4, 4), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    reference = _double_backprop_r(model, x)
    errors = [abs(float(nt.nt_regularizer(model, x, h)[0].detach()) - float(reference.detach())) for h in (1e-2, 1e-3, 1e-4)]
    assert errors[0] > 0
    for coarse, fine in zip(errors, errors[1:]):  # O(h): each 10x smaller h gives ~10x smaller error
        assert 5 < coarse / fine < 20
    # and so do their gradients in the parameters, which is what training uses
    r, _ = nt.nt_regularizer(model, x, 1e-6)
    g_fd = torch.autograd.grad(r, list(model.parameters()))
    g_ref = torch.autograd.grad(_double_backprop_r(model, x), list(model.parameters()), allow_unused=True)
    for a, b in zip(g_fd, g_ref):  # the output bias does not enter the input gradient: None there
        assert torch.allclose(a, torch.zeros_like(a) if b is None else b, rtol=1e-3, atol=1e-6)


def test_input_gradient_norm_closed_form():
    linear = nn.Conv2d(3, 1, (5, 5), bias=False)
    model = lambda z: linear(z).reshape(-1)  # noqa: E731  f(x) = <w, x>
    x = torch.rand(3, 3, 5, 5)
    w = linear.weight.detach()
    assert torch.allclose(nt.input_gradient_norm(model, x, batch_size=2), w.abs().sum().repeat(3))
    assert torch.allclose(nt.input_gradient_norm(model, x, p=2), w.norm().repeat(3))


def test_nt_loss_parts_and_pixel_units():
    model = Smooth()
    x = torch.rand((4, 1, 4, 4), dtype=torch.float64)
    target = torch.zeros(4, dtype=torch.float64)
    loss, parts = nt.nt_loss(model, x, target, h=1e-4, lam=0.5)
    assert parts["iqa"] == pytest.approx(float(model(x).detach().abs().mean()))
    assert float(loss.detach()) == pytest.approx(parts["iqa"] + 0.5 * parts["reg"])
    h, lam = nt.pixel_equivalent()
    assert h == pytest.approx(0.01 * 0.226) and lam == pytest.approx(0.001 * 0.226**2)
    assert nt.pixel_equivalent(0.02, 0.002, std=0.5) == pytest.approx((0.01, 0.0005))


def test_dropout_masks_are_shared_between_the_two_passes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Dropout(0.5), nn.Linear(32, 1)).train()
    x = torch.rand(6, 1, 4, 4)
    # the model is piecewise linear: with shared masks the finite difference is exact for small h
    r, _ = nt.nt_regularizer(model, x, 1e-4)
    assert torch.isfinite(r) and float(r.detach()) < 1e3


def _images() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.rand((3, 40, 48), generator=gen) for _ in range(3)]


def _tiny():
    from certiqa.models import CNNIQA

    torch.manual_seed(0)
    return CNNIQA(kernels=4, hidden=16)


def test_training_resumes_exactly_and_logs(tmp_path):
    cfg = dict(batch_size=2, crop=34, lr=1e-3, seed=3, log_every=1, checkpoint_every=1)
    straight = nt.train_nt(_tiny(), _images(), nt.NTConfig(steps=4, **cfg), out_dir=tmp_path / "a", progress=False)
    nt.train_nt(_tiny(), _images(), nt.NTConfig(steps=2, **cfg), out_dir=tmp_path / "b", progress=False)
    resumed = nt.train_nt(_tiny(), _images(), nt.NTConfig(steps=4, **cfg), out_dir=tmp_path / "b", progress=False)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(straight.fc3.weight, _tiny().fc3.weight)
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3, 4] and all(row["reg"] > 0 for row in log)
    saved = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    assert torch.equal(saved["fc3.weight"], straight.fc3.weight)


def test_training_on_targets_moves_towards_them(tmp_path):
    model = _tiny()
    images = _images()
    targets = [50.0, 50.0, 50.0]
    with torch.no_grad():
        before = (torch.stack([model(im[None]) for im in images]) - 50).abs().mean()
    cfg = nt.NTConfig(steps=30, batch_size=3, crop=34, lr=3e-2, lam=0.0, log_every=10)
    model = nt.train_nt(model, images, cfg, targets=targets, out_dir=tmp_path, progress=False)
    with torch.no_grad():
        after = (torch.stack([model(im[None]) for im in images]) - 50).abs().mean()
    assert after < before / 2


def test_training_errors(tmp_path):
    with pytest.raises(ValueError, match="crop"):
        nt.train_nt(_tiny(), _images(), nt.NTConfig(crop=64), out_dir=tmp_path)
    with pytest.raises(ValueError, match="one score per image"):
        nt.train_nt(_tiny(), _images(), nt.NTConfig(crop=34), targets=[1.0], out_dir=tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        nt.train_nt(_tiny(), [], nt.NTConfig(), out_dir=tmp_path)
    with pytest.raises(ValueError, match="h must be"):
        nt.nt_regularizer(_tiny(), torch.rand(1, 3, 40, 40), h=0)
    with pytest.raises(ValueError, match="lr must be"):
        nt.train_nt(_tiny(), _images(), nt.NTConfig(crop=34, lr=-1), out_dir=tmp_path)


def test_random_crops_shapes():
    crops, index = nt.random_crops(_images(), 5, 34, torch.Generator().manual_seed(0))
    assert crops.shape == (5, 3, 34, 34) and index.shape == (5,) and int(index.max()) < 3
