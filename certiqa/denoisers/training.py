"""Training a denoiser D for a frozen NR-IQA model f and a noise level (or range).

Each step takes random crops x of a batch of images, draws sigma and Gaussian noise,
and minimises a weighted sum of :mod:`certiqa.losses` terms between D(clip(x + sigma G))
and x (pixels) and between f(D(...)) and the targets t (scores): by default the frozen
model's clean scores f(x), or the images' human scores. Scores are divided by a fixed
``score_scale`` (the spread of f on the training crops) so that loss weights and the
ranking margin do not depend on the model's score range.

All randomness of a step (image order, crops, sigma, noise) comes from one CPU
generator whose state is checkpointed with the model, the optimizer, the step, the
data order and the global torch / numpy / python RNG states, so a resumed run gives
the same weights as an uninterrupted one.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import metrics
from .._checks import check_int, check_positive
from ..io import IMAGE_EXTENSIONS, find_images, read_image
from ..losses import LossWeights, combined_loss
from ..loading import read_checkpoint
from ..smoothing import SmoothedIQA
from . import ARCHITECTURES, load_denoiser, save_denoiser
from .nets import SubpixelDnCNN

__all__ = [
    "TrainImage",
    "TrainConfig",
    "load_images",
    "build_denoiser",
    "train_denoiser",
    "validate",
    "TrainResult",
]

CHECKPOINT_FORMAT = "certiqa-denoiser-train-v1"
STEP_FIELDS = ["step", "epoch", "sigma", "loss", "mse", "fidelity", "rank", "corr", "lr", "seconds"]
VAL_FIELDS = ["step", "epoch", "sigma", "n", "srocc_base", "plcc_base", "srocc_human", "plcc_human", "images", "human_images"]


@dataclass(frozen=True)
class TrainImage:
    """One image (3, H, W) in [0, 1] with an optional human score (on any one scale)."""

    image: torch.Tensor
    score: float | None = None
    name: str = ""


def load_images(
    source: str | os.PathLike, *, resize: int | None = None, min_size: int = 1, include: Sequence[str] = ()
) -> list[TrainImage]:
    """Images of a folder (searched recursively) or of a manifest CSV with a ``file`` column
    (paths relative to the CSV; rows that are not image files are skipped) and an optional
    ``score`` column (blank = unknown).

    ``include``: keep only files whose path relative to the source contains one of these
    strings (all when empty). ``resize`` sets the shorter side. Sorted by path."""
    source = Path(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        with open(source, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or "file" not in rows[0]:
            raise ValueError(f"{source}: a manifest CSV needs a 'file' column, got columns {list(rows[0]) if rows else []}.")
        entries = [
            (r["file"], source.parent / r["file"], r.get("score") or None)
            for r in rows
            if r["file"].lower().endswith(IMAGE_EXTENSIONS)  # manifests may also list model files
        ]
    elif source.is_dir():
        entries = [(str(p.relative_to(source)), p, None) for p in find_images([source])]
    else:
        raise FileNotFoundError(f"{source}: expected an image folder or a manifest .csv file.")
    entries = sorted(e for e in entries if not include or any(s in e[0] for s in include))
    if not entries:
        raise ValueError(f"{source}: no images found (include filter: {list(include) or 'none'}).")
    return [
        TrainImage(read_image(path, resize=resize, min_size=min_size).image, None if score is None else float(score), rel)
        for rel, path, score in entries
    ]


def build_denoiser(arch: str, **config: Any) -> nn.Module:
    """A fresh denoiser by architecture name (a key of :data:`ARCHITECTURES`) and config."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown denoiser architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}.")
    return ARCHITECTURES[arch](**config)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (checked again on resume).

    ``sigma`` is a value or a (min, max) range drawn uniformly per crop; an epoch is
    ``epoch_steps`` steps (default: one pass over the images); validation runs at the end
    of every ``val_every`` epochs with ``val_n`` noise samples at ``val_sigma`` (default:
    the middle of the sigma range). ``init`` names a denoiser file (same architecture and
    config) to start from instead of the identity, e.g. to fine-tune an MSE-trained
    denoiser with the ranking loss; a ``SubpixelDnCNN`` without context may also start a
    run of the same one with ``context=K``: its layers are copied and the context, whose last
    layer starts at zero, begins as a no-op, so the run starts from the same function."""

    sigma: float | tuple[float, float]
    steps: int
    arch: str = "dncnn"
    arch_config: dict[str, Any] = field(default_factory=lambda: {"depth": 6, "features": 24, "batch_norm": False})
    batch_size: int = 16
    crop: int = 96
    lr: float = 1e-3
    weights: LossWeights = LossWeights()
    targets: str = "base"
    seed: int = 0
    checkpoint_every: int = 50
    epoch_steps: int | None = None
    val_every: int = 1
    val_n: int = 16
    val_sigma: float | None = None
    init: str | None = None
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        lo, hi = self.sigma_range
        check_positive("sigma", lo)
        if hi < lo:
            raise ValueError(f"sigma range must be (min, max) with min <= max, got {self.sigma}.")
        for name in ("steps", "batch_size", "crop", "checkpoint_every", "val_every", "val_n"):
            check_int(name, getattr(self, name))
        check_positive("lr", self.lr)
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}.")
        if self.targets not in ("base", "human"):
            raise ValueError(f"targets must be 'base' (the model's clean scores) or 'human', got {self.targets!r}.")

    @property
    def sigma_range(self) -> tuple[float, float]:
        s = self.sigma
        return (float(s), float(s)) if isinstance(s, (int, float)) else (float(s[0]), float(s[1]))

    def fingerprint(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues (all but ``steps``)."""
        d = dataclasses.asdict(self)
        d.pop("steps")
        if d["init"] is None:  # checkpoints written before these options existed stay resumable
            d.pop("init")
        if d["lr_schedule"] == "constant":
            d.pop("lr_schedule")
        d["sigma"] = list(self.sigma_range)
        return d


@dataclass
class TrainResult:
    """The trained denoiser (eval mode), the step reached, the last validation row and the
    row of the best validation SROCC against the clean scores (whose weights are in
    denoiser_best.pt), each None without validation images."""

    denoiser: nn.Module
    step: int
    validation: dict[str, Any] | None
    best_validation: dict[str, Any] | None = None


def _best_validation(path: Path) -> dict[str, Any] | None:
    """The val_log.csv row with the highest finite srocc_base (the first of ties), or None."""
    if not path.exists():
        return None
    with path.open(newline="") as fh:
        rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    rows = [row for row in rows if math.isfinite(row["srocc_base"])]
    return max(rows, key=lambda row: row["srocc_base"]) if rows else None


def _rng_states() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": [py[0], list(py[1]), py[2]],
    }


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    py = states["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


class _Sampler:
    """Endless shuffled stream of image indices plus crops, sigmas and noise, from one generator."""

    def __init__(self, count: int, seed: int) -> None:
        self.count = count
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(count, generator=self.generator)
        self.pos = 0

    def state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "order": self.order.clone(), "pos": self.pos}

    def load(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.order, self.pos = state["order"].clone(), int(state["pos"])

    def indices(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            if self.pos == self.count:
                self.order, self.pos = torch.randperm(self.count, generator=self.generator), 0
            out.append(int(self.order[self.pos]))
            self.pos += 1
        return out

    def crop(self, image: torch.Tensor, size: int) -> torch.Tensor:
        h, w = image.shape[-2:]
        top = int(torch.randint(0, h - size + 1, (1,), generator=self.generator))
        left = int(torch.randint(0, w - size + 1, (1,), generator=self.generator))
        return image[:, top : top + size, left : left + size]


def _clean_scores(model: nn.Module, images: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([model(im.unsqueeze(0).to(device))[0].reshape(()) for im in images]).cpu()


def _safe(fn: Callable[..., float], *args: Any, **kwargs: Any) -> float:
    try:
        return fn(*args, **kwargs)
    except (ValueError, RuntimeError):
        return math.nan


def validate(
    model: nn.Module,
    denoiser: nn.Module | None,
    images: Sequence[TrainImage],
    sigma: float,
    n: int,
    *,
    clean: torch.Tensor | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """SROCC / PLCC (no mapping) of the smoothed median (``n`` samples, fixed noise seed)
    against the clean base scores, and against human scores over the images that have one
    (NaN where fewer than 3). Images are processed one at a time (sizes may differ)."""
    device = next(model.parameters()).device
    smoothed = SmoothedIQA(model, sigma, n=n, batch_size=max(1, min(n, 32)), denoiser=denoiser, seed=seed)
    medians = torch.stack([smoothed.predict(im.image.unsqueeze(0))[0].cpu() for im in images])
    if clean is None:
        clean = _clean_scores(model, [im.image for im in images], device)
    scored = [i for i, im in enumerate(images) if im.score is not None]
    human = torch.tensor([images[i].score for i in scored], dtype=torch.float64)
    return {
        "sigma": sigma,
        "n": n,
        "srocc_base": _safe(metrics.srocc, medians, clean),
        "plcc_base": _safe(metrics.plcc, medians, clean, mapping="none"),
        "srocc_human": _safe(metrics.srocc, medians[scored], human) if len(scored) >= 3 else math.nan,
        "plcc_human": _safe(metrics.plcc, medians[scored], human, mapping="none") if len(scored) >= 3 else math.nan,
        "images": len(images),
        "human_images": len(scored),
    }


def _append_csv(path: Path, fields: list[str], row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in fields})


def _truncate_csv(path: Path, fields: list[str], step: int) -> None:
    """Keep only the rows up to ``step`` (a killed run may have logged steps past its checkpoint)."""
    if not path.exists():
        return
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= step]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def train_denoiser(
    model: nn.Module,
    images: Sequence[TrainImage],
    config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    val_images: Sequence[TrainImage] = (),
    resume: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
    meta: dict[str, Any] | None = None,
    keep_validated: bool = False,
) -> TrainResult:
    """Train a denoiser for the frozen ``model``; write ``out_dir``/checkpoint.pt (every
    ``checkpoint_every`` steps and at the end), train_log.csv (one row per step),
    val_log.csv (one row per validation), denoiser.pt (:func:`save_denoiser`, at the end) and,
    with validation images, denoiser_best.pt: the weights at the validation with the highest
    SROCC against the clean scores so far (early stopping without stopping; the file's meta
    has ``val_srocc_base``), so that a late decline costs nothing. With ``keep_validated`` every
    validated state is kept too, as denoiser_step<STEP>.pt (6 digits), to score them later.

    With ``resume=True`` the run continues from ``out_dir``/checkpoint.pt (which must come
    from the same config, except ``steps``) and ends with the same weights as an
    uninterrupted run of ``config.steps`` steps.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    too_small = [im.name or str(i) for i, im in enumerate(images) if min(im.image.shape[-2:]) < config.crop]
    if too_small:
        raise ValueError(f"{len(too_small)} image(s) are smaller than the {config.crop}px crop: {too_small[:5]}; lower --crop.")
    if config.targets == "human" and any(im.score is None for im in images):
        raise ValueError("targets='human' needs a score for every training image; use targets='base'.")
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    lo, hi = config.sigma_range
    val_sigma = config.val_sigma if config.val_sigma is not None else (lo + hi) / 2
    epoch_steps = config.epoch_steps or max(1, math.ceil(len(images) / config.batch_size))
    ckpt_path, log_path, val_path = out / "checkpoint.pt", out / "train_log.csv", out / "val_log.csv"

    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    denoiser = build_denoiser(config.arch, **config.arch_config).to(device)
    if config.init is not None:
        start = load_denoiser(config.init)
        adds_context = (
            type(denoiser) is type(start) is SubpixelDnCNN and start.config == {**denoiser.config, "context": 0}
        )
        if type(start) is not type(denoiser) or (start.config != denoiser.config and not adds_context):
            raise ValueError(
                f"init denoiser {config.init!r} is a {type(start).__name__} {start.config}; "
                f"this run trains a {type(denoiser).__name__} {denoiser.config} (the same, or the same with "
                "context added)."
            )
        denoiser.load_state_dict(start.state_dict(), strict=not adds_context)  # only context.* may be missing
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=config.lr)
    sampler = _Sampler(len(images), config.seed)
    step = 0
    if resume:
        ckpt = read_checkpoint(ckpt_path, "training checkpoint")
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{ckpt_path} is not a certiqa denoiser training checkpoint.")
        if ckpt["config"] != config.fingerprint():
            raise ValueError(
                f"{ckpt_path} was written with different settings; resume with the same options.\n"
                f"checkpoint: {ckpt['config']}\nnow:        {config.fingerprint()}"
            )
        denoiser.load_state_dict(ckpt["denoiser"])
        optimizer.load_state_dict(ckpt["optimizer"])
        sampler.load(ckpt["sampler"])
        _set_rng_states(ckpt["rng"])
        step, score_scale = int(ckpt["step"]), float(ckpt["score_scale"])
        _truncate_csv(log_path, STEP_FIELDS, step)
        _truncate_csv(val_path, VAL_FIELDS, step)
    else:
        for stale in (log_path, val_path):
            stale.unlink(missing_ok=True)
        with torch.no_grad():  # fixed-seed crops, so the scale is the same on every (re)start
            probe = _Sampler(len(images), config.seed + 1)
            crops = torch.stack([probe.crop(images[i].image, config.crop) for i in probe.indices(64)])
            scores = torch.cat([model(c.to(device)) for c in crops.split(16)]).reshape(-1).cpu()
        score_scale = float(scores.std()) if config.targets == "base" else float(torch.tensor([im.score for im in images]).std())
        if not math.isfinite(score_scale) or score_scale <= 0:
            score_scale = 1.0

    def checkpoint() -> None:
        _save_checkpoint(ckpt_path, {
            "format": CHECKPOINT_FORMAT, "step": step, "config": config.fingerprint(), "score_scale": score_scale,
            "denoiser": denoiser.state_dict(), "optimizer": optimizer.state_dict(), "sampler": sampler.state(),
            "rng": _rng_states(),
        })

    def save(path: Path, **extra: Any) -> None:
        save_denoiser(
            denoiser, path, sigma=list(config.sigma_range), steps=step, score_scale=score_scale,
            loss_weights=dataclasses.asdict(config.weights), crop=config.crop, seed=config.seed, targets=config.targets,
            init=config.init, lr=config.lr, lr_schedule=config.lr_schedule, **extra, **(meta or {}),
        )

    val_clean = _clean_scores(model, [im.image for im in val_images], device) if val_images else None
    last_val: dict[str, Any] | None = None
    best_val = _best_validation(val_path) if resume else None
    bar = tqdm(total=config.steps, initial=step, disable=not progress, desc="train denoiser", dynamic_ncols=True)
    started = time.perf_counter()
    denoiser.train()
    while step < config.steps:
        idx = sampler.indices(config.batch_size)
        clean = torch.stack([sampler.crop(images[i].image, config.crop) for i in idx])
        sigmas = lo + (hi - lo) * torch.rand(len(idx), 1, 1, 1, generator=sampler.generator)
        noise = torch.randn(clean.shape, generator=sampler.generator)
        x = clean.to(device)
        z = (x + (sigmas * noise).to(device)).clamp(0.0, 1.0)
        with torch.no_grad():
            target = model(x).reshape(-1) if config.targets == "base" else torch.tensor([images[i].score for i in idx], device=device)
        denoised = denoiser(z)
        pred = model(denoised).reshape(-1)
        loss, terms = combined_loss(denoised, x, pred / score_scale, target / score_scale, config.weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.lr_schedule == "cosine":
            for group in optimizer.param_groups:
                group["lr"] = config.lr * (1 + math.cos(math.pi * step / config.steps)) / 2
        optimizer.step()
        step += 1
        epoch = (step - 1) // epoch_steps + 1
        row = {"step": step, "epoch": epoch, "sigma": float(sigmas.mean()), "loss": float(loss.detach()), **terms,
               "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - started, 3)}
        _append_csv(log_path, STEP_FIELDS, row)
        bar.update(1)
        bar.set_postfix({k: f"{terms[k]:.4g}" for k in ("mse", "fidelity", "rank", "corr")})
        if val_images and step % epoch_steps == 0 and epoch % config.val_every == 0:
            last_val = {"step": step, "epoch": epoch,
                        **validate(model, denoiser, val_images, val_sigma, config.val_n, clean=val_clean, seed=config.seed)}
            denoiser.eval()
            if keep_validated:
                save(out / f"denoiser_step{step:06d}.pt", val_srocc_base=last_val["srocc_base"])
            if math.isfinite(last_val["srocc_base"]) and (best_val is None or last_val["srocc_base"] > best_val["srocc_base"]):
                best_val = last_val
                save(out / "denoiser_best.pt", val_srocc_base=last_val["srocc_base"])  # before the log row: see resume
            denoiser.train()
            _append_csv(val_path, VAL_FIELDS, last_val)
            bar.write(
                f"epoch {epoch} step {step}: val SROCC/PLCC vs clean {last_val['srocc_base']:.4f}/"
                f"{last_val['plcc_base']:.4f}, vs human {last_val['srocc_human']:.4f}/{last_val['plcc_human']:.4f}"
            )
        if step % config.checkpoint_every == 0 or step == config.steps:
            checkpoint()
    bar.close()
    denoiser.eval()
    save(out / "denoiser.pt")
    return TrainResult(denoiser=denoiser, step=step, validation=last_val, best_validation=best_val)
