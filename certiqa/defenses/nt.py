"""Norm regularisation training (NT; Liu et al., CVPR 2024): an empirical defense that
shrinks the l1 norm of an IQA model's input gradient.

The regulariser is the finite-difference estimate of ``||grad_x f(x)||_1^2``::

    d = sign(grad_x f(x))          (detached)
    r = ((f(x + h d) - f(x)) / h)^2, averaged over the batch

since ``f(x + h d) - f(x) = h <grad f, sign(grad f)> + O(h^2) = h ||grad f||_1 + O(h^2)``.
No double backpropagation is needed. The training loss is ``L = L_IQA + lam * r``.

Units. The published defaults h = 0.01 and lam = 0.001 are for ImageNet-normalised
inputs u = (x - mean) / std, std ~ 0.226. For a model taking [0, 1] pixels x (all
certiqa models), the same regularisation is ``h_pix = h * std`` (0.00226, i.e. 0.58/255
per pixel) and ``lam_pix = lam * std^2`` (5.1e-5), because a step h in u is a step
h * std in x and ``||grad_u||_1 = std * ||grad_x||_1``; see :func:`pixel_equivalent`.
Both are parameters everywhere. The regulariser also scales with the square of the
score scale (CNNIQA's DMOS is 0-100).
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .._checks import check_images, check_int, check_nonnegative, check_positive, check_scores
from ..loading import read_checkpoint
from ..smoothing import _device_of, _eval_mode

__all__ = [
    "NT_H",
    "NT_LAMBDA",
    "IMAGENET_STD",
    "pixel_equivalent",
    "nt_regularizer",
    "nt_loss",
    "input_gradient_norm",
    "NTConfig",
    "train_nt",
    "random_crops",
]

NT_H = 0.01
NT_LAMBDA = 0.001
IMAGENET_STD = (0.229, 0.224, 0.225)

ScoreModel = Callable[[torch.Tensor], torch.Tensor]


def pixel_equivalent(h: float = NT_H, lam: float = NT_LAMBDA, std: float | None = None) -> tuple[float, float]:
    """(h, lam) for a model on [0, 1] pixels that match (h, lam) given for inputs normalised by ``std``
    (default: the mean ImageNet std, 0.226): ``(h * std, lam * std**2)``."""
    std = sum(IMAGENET_STD) / 3 if std is None else check_positive("std", std)
    return check_positive("h", h) * std, check_nonnegative("lam", lam) * std**2


def nt_regularizer(model: ScoreModel, x: torch.Tensor, h: float = NT_H) -> tuple[torch.Tensor, torch.Tensor]:
    """The NT term r (a scalar, differentiable in the model's parameters) and f(x) (B,).

    ``f(x)`` is returned with its graph so the IQA loss can reuse it. ``x + h d`` is
    not clamped to [0, 1]: the finite difference needs the full step at every pixel.
    Both forward passes draw the same random numbers (same dropout masks in training
    mode), so r measures the input sensitivity and not the dropout noise.
    """
    h = check_positive("h", h)
    xg = x.detach().requires_grad_(True)
    cuda = x.is_cuda
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(x.device) if cuda else None
    with torch.enable_grad():
        scores = check_scores(model(xg), x.shape[0])
        (grad,) = torch.autograd.grad(scores.sum(), xg, retain_graph=True)
        torch.set_rng_state(cpu_state)
        if cuda:
            torch.cuda.set_rng_state(cuda_state, x.device)
        shifted = check_scores(model(x.detach() + h * grad.sign().detach()), x.shape[0])
        r = (((shifted - scores) / h) ** 2).mean()
    return r, scores


def nt_loss(
    model: ScoreModel,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    h: float = NT_H,
    lam: float = NT_LAMBDA,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``L = mean |f(x) - target| + lam * r``; returns L and its parts as floats."""
    lam = check_nonnegative("lam", lam)
    r, scores = nt_regularizer(model, x, h)
    iqa = (scores - target.reshape(-1).to(scores)).abs().mean()
    loss = iqa + lam * r
    return loss, {"loss": float(loss.detach()), "iqa": float(iqa.detach()), "reg": float(r.detach())}


def input_gradient_norm(model: ScoreModel, x: torch.Tensor, p: float = 1, batch_size: int = 8) -> torch.Tensor:
    """Per image ``||grad_x f(x)||_p`` (default l1), shape (B,), in eval mode.

    This is what NT shrinks: an l-inf attack of budget eps moves the score by about
    ``eps * ||grad||_1`` to first order; an l2 attack by ``eps * ||grad||_2``."""
    check_images(x)
    device = _device_of(model, x.device)
    norms = []
    with _eval_mode(model):
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].detach().to(device).requires_grad_(True)
            with torch.enable_grad():
                scores = check_scores(model(xb), xb.shape[0], first_index=start)
                (grad,) = torch.autograd.grad(scores.sum(), xb)
            norms.append(grad.flatten(1).norm(p=p, dim=1).detach().cpu())
    return torch.cat(norms)


def random_crops(
    images: Sequence[torch.Tensor], count: int, size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random ``size`` x ``size`` crops (with random horizontal flips) from a list
    of (C, H, W) images; returns the crops (count, C, size, size) and their image indices."""
    index = torch.randint(len(images), (count,), generator=generator)
    crops = []
    for i in index.tolist():
        img = images[i]
        h, w = img.shape[-2:]
        top = int(torch.randint(h - size + 1, (1,), generator=generator))
        left = int(torch.randint(w - size + 1, (1,), generator=generator))
        crop = img[:, top : top + size, left : left + size]
        if bool(torch.rand((), generator=generator) < 0.5):
            crop = crop.flip(-1)
        crops.append(crop)
    return torch.stack(crops), index


@dataclass
class NTConfig:
    """Settings of :func:`train_nt` (saved in every checkpoint and log)."""

    steps: int = 300
    batch_size: int = 8
    crop: int = 96
    lr: float = 1e-4
    h: float = NT_H
    lam: float = NT_LAMBDA
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 100


def _check_config(cfg: NTConfig, images: Sequence[torch.Tensor]) -> None:
    for name in ("steps", "batch_size", "crop", "log_every", "checkpoint_every"):
        check_int(name, getattr(cfg, name))
    check_positive("lr", cfg.lr)
    check_positive("h", cfg.h)
    check_nonnegative("lam", cfg.lam)
    if not images:
        raise ValueError("train_nt needs at least one training image.")
    for i, img in enumerate(images):
        if img.ndim != 3 or min(img.shape[-2:]) < cfg.crop:
            raise ValueError(
                f"training image {i} has shape {tuple(img.shape)}; expected (C, H, W) with H, W >= crop={cfg.crop}. "
                "Use a smaller crop or larger images."
            )


def train_nt(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    config: NTConfig,
    *,
    targets: Sequence[float] | None = None,
    out_dir: str | os.PathLike,
    resume: bool = True,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> nn.Module:
    """Train or fine-tune ``model`` with NT on random crops of ``images`` ((C, H, W) in [0, 1]).

    With ``targets`` (one score per image, on the model's scale) the IQA loss is
    ``|f(crop) - target|`` (training on human scores). Without, it is
    ``|f(crop) - f0(crop)|``, f0 a frozen copy of the model as given: fine-tuning
    that keeps the pretrained model's own clean scores.

    Writes to ``out_dir``: ``checkpoint.pt`` every ``checkpoint_every`` steps and at
    the end (model, optimiser, step, RNG state, config; resumed from when
    ``resume``), ``log.jsonl`` (one line per ``log_every`` steps: step, loss, iqa,
    reg, seconds), and ``model.pt`` (a plain state dict) at the end. Returns the
    model in eval mode. Dropout stays on during training.
    """
    _check_config(config, images)
    if targets is not None and len(targets) != len(images):
        raise ValueError(f"targets must have one score per image: got {len(targets)} for {len(images)} images.")
    for i, img in enumerate(images):
        check_images(img.unsqueeze(0), f"training image {i}")
    device = torch.device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.to(device)
    teacher = None
    if targets is None:
        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    target_values = None if targets is None else torch.tensor([float(t) for t in targets], dtype=torch.float32)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # dropout
    step = 0
    ckpt_path = out / "checkpoint.pt"
    if resume and ckpt_path.is_file():
        state = read_checkpoint(ckpt_path, "an NT training checkpoint")
        model.load_state_dict(state["model"])
        if teacher is not None:
            teacher.load_state_dict(state["teacher"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        step = int(state["step"])

    def save() -> None:
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "step": step,
            "config": json.dumps(asdict(config)),
        }
        if teacher is not None:
            state["teacher"] = teacher.state_dict()
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, ckpt_path)

    model.train()
    start_time = time.perf_counter()
    sums = {"loss": 0.0, "iqa": 0.0, "reg": 0.0}
    seen = 0
    with open(out / "log.jsonl", "a") as log, tqdm(
        total=config.steps, initial=step, desc="NT training", unit="step", disable=not progress
    ) as bar:
        while step < config.steps:
            crops, index = random_crops(images, config.batch_size, config.crop, generator)
            crops = crops.to(device)
            if teacher is None:
                target = target_values[index].to(device)
            else:
                with torch.no_grad():
                    target = teacher(crops)
            loss, parts = nt_loss(model, crops, target, h=config.h, lam=config.lam)
            if not math.isfinite(parts["loss"]):
                raise FloatingPointError(f"NT loss became {parts['loss']} at step {step}; lower lr or lam.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            seen += 1
            for k in sums:
                sums[k] += parts[k]
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps:
                row = {k: v / seen for k, v in sums.items()}
                row.update(step=step, seconds=round(time.perf_counter() - start_time, 2))
                log.write(json.dumps(row) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{row['loss']:.3g}", reg=f"{row['reg']:.3g}")
                sums = dict.fromkeys(sums, 0.0)
                seen = 0
            if step % config.checkpoint_every == 0 or step == config.steps:
                save()
    torch.save(model.state_dict(), out / "model.pt")
    return model.eval()
