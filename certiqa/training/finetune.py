"""Fine-tuning an NR-IQA model under the noise it will be smoothed with.

The *teacher* is a frozen copy of the model; the *student* is the model itself, trained so
that its scores of noisy images clip(x + sigma G) agree with the teacher's scores of the
noise-free x. Each step takes a batch of random crops of the training photographs, each
crop left clean or distorted by one of :data:`certiqa.distortions.DISTORTIONS` at a random
level 1-5 (so the batch spans a range of qualities), draws ``draws`` noise copies of every
crop and minimises (scores divided by a fixed ``score_scale``, the spread of the teacher on
the training crops, so that weights and margins do not depend on the model's score range):

- ``fidelity``: MSE (or L1) between every noisy score and the crop's target;
- ``rank``: the pairwise hinge :func:`certiqa.losses.ranking_loss` of each draw's scores
  against the targets (order kept, margin ``margin``);
- ``consistency``: :func:`certiqa.losses.score_spread`, the variance of each crop's scores
  across its noise draws (what sets the certified width of the smoothed student);
- ``clean`` (optional): fidelity of the student's score of the noise-free crop, so that it
  still scores clean images like the teacher.

Targets are the teacher's clean scores of the (distorted) crops, or human scores of the
photographs (``targets="human"``, without distortions). The student runs in eval mode
(dropout off: the only randomness is the noise and the data). All randomness of a step
comes from one generator, checkpointed with the student, the optimizer, the step and the
global RNG states (the checkpoint helpers of :mod:`certiqa.denoisers.training`), so a
resumed run ends with the same weights as an uninterrupted one.

The smoothed student is a new metric: its certificates are about the student, and how far
it agrees with the teacher is what an evaluation measures.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .._checks import check_int, check_nonnegative, check_positive
from ..denoisers.evaluation import fingerprint
from ..denoisers.training import (
    _append_csv,
    _rng_states,
    _Sampler,
    _save_checkpoint,
    _set_rng_states,
    _truncate_csv,
)
from ..distortions import DISTORTIONS, LEVELS, distort
from ..io import file_sha256
from ..losses import ranking_loss, score_fidelity, score_mse, score_spread
from ..models.cnniqa import CNNIQA, read_checkpoint
from ..models.spec import METADATA_FILE, LoadedModel

__all__ = ["FinetuneConfig", "FinetuneResult", "finetune_losses", "finetune", "save_student", "STUDENT_FORMAT"]

CHECKPOINT_FORMAT = "certiqa-finetune-train-v1"
STUDENT_FORMAT = "certiqa-student-v1"
STEP_FIELDS = ["step", "loss", "fidelity", "rank", "consistency", "clean", "lr", "seconds"]
CERTIFIES = "the smoothed student: a new metric fine-tuned from the teacher, not the teacher itself"


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything that defines a fine-tuning run (checked again on resume, all but ``steps``
    and ``checkpoint_every``). Loss weights of 0 skip a term."""

    sigma: float = 0.12
    steps: int = 3000
    batch_size: int = 16
    crop: int = 160
    draws: int = 2
    lr: float = 1e-4
    lr_schedule: str = "constant"
    fidelity: str = "mse"
    w_fidelity: float = 1.0
    w_rank: float = 1.0
    margin: float = 0.1
    w_consistency: float = 1.0
    w_clean: float = 0.0
    distortions: tuple[str, ...] = tuple(sorted(DISTORTIONS))
    p_clean: float = 0.1
    targets: str = "teacher"
    seed: int = 0
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        check_positive("sigma", self.sigma)
        for name in ("steps", "batch_size", "crop", "draws", "checkpoint_every"):
            check_int(name, getattr(self, name))
        check_positive("lr", self.lr)
        for name in ("w_fidelity", "w_rank", "margin", "w_consistency", "w_clean"):
            check_nonnegative(name, getattr(self, name))
        if self.w_fidelity == self.w_rank == self.w_consistency == self.w_clean == 0:
            raise ValueError("all loss weights are zero; give fidelity, rank, consistency or clean a weight > 0.")
        if self.w_consistency > 0 and self.draws < 2:
            raise ValueError(f"the consistency term needs draws >= 2 noise copies per crop, got {self.draws}; "
                             "raise --draws or set --w-consistency 0.")
        if self.fidelity not in ("mse", "l1"):
            raise ValueError(f"fidelity must be 'mse' or 'l1', got {self.fidelity!r}.")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}.")
        unknown = [d for d in self.distortions if d not in DISTORTIONS]
        if unknown:
            raise ValueError(f"unknown distortion(s) {unknown}; choose from {sorted(DISTORTIONS)}.")
        if not 0 <= self.p_clean <= 1:
            raise ValueError(f"p_clean must be a probability in [0, 1], got {self.p_clean}.")
        if self.targets not in ("teacher", "human"):
            raise ValueError(f"targets must be 'teacher' (its clean scores) or 'human', got {self.targets!r}.")
        if self.targets == "human" and self.distortions:
            raise ValueError("targets='human' scores whole photographs: distortions would change their quality; "
                             "pass distortions=() (--distortions with no names).")

    def fingerprint(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues."""
        d = dataclasses.asdict(self)
        d.pop("steps")
        d.pop("checkpoint_every")
        d["distortions"] = list(self.distortions)
        return d


@dataclass
class FinetuneResult:
    """The student (eval mode), the step reached and the score scale of the loss terms."""

    student: nn.Module
    step: int
    score_scale: float


def finetune_losses(
    student: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    noise: torch.Tensor,
    config: FinetuneConfig,
    score_scale: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted loss of one batch and every term (as floats, also zero-weighted ones
    except ``clean``, which costs a pass and is 0 unless weighted).

    ``images`` (B, 3, H, W) noise-free crops in [0, 1]; ``targets`` (B,) their target
    scores; ``noise`` (K, B, 3, H, W) standard normal draws, the student sees
    clip(images + sigma noise[k]). Scores and targets are divided by ``score_scale``."""
    k, b = noise.shape[0], images.shape[0]
    if noise.shape[1:] != images.shape or targets.shape != (b,):
        raise ValueError(f"expected images (B, 3, H, W), targets (B,) and noise (K, B, 3, H, W); got "
                         f"{tuple(images.shape)}, {tuple(targets.shape)} and {tuple(noise.shape)}.")
    noisy = (images.unsqueeze(0) + config.sigma * noise).clamp(0.0, 1.0).reshape(k * b, *images.shape[1:])
    scores = student(noisy).reshape(k, b).t() / score_scale  # (B, K)
    t = targets / score_scale
    fidelity = score_mse if config.fidelity == "mse" else score_fidelity
    terms = {
        "fidelity": fidelity(scores.reshape(-1), t.repeat_interleave(k)),
        "rank": torch.stack([ranking_loss(scores[:, j], t, config.margin) for j in range(k)]).mean(),
        "consistency": score_spread(scores) if k >= 2 else scores.sum() * 0.0,
        "clean": fidelity(student(images).reshape(-1) / score_scale, t) if config.w_clean > 0 else scores.sum() * 0.0,
    }
    weights = {"fidelity": config.w_fidelity, "rank": config.w_rank, "consistency": config.w_consistency,
               "clean": config.w_clean}
    total = sum(weights[name] * value for name, value in terms.items() if weights[name] > 0)
    return total, {name: float(value.detach()) for name, value in terms.items()}


def _distorted(crop: torch.Tensor, config: FinetuneConfig, generator: torch.Generator) -> torch.Tensor:
    """The crop (3, H, W), left clean with probability p_clean, else distorted by a random kind and level."""
    clean = float(torch.rand((), generator=generator)) < config.p_clean
    if clean or not config.distortions:
        return crop
    kind = config.distortions[int(torch.randint(len(config.distortions), (), generator=generator))]
    level = LEVELS[int(torch.randint(len(LEVELS), (), generator=generator))]
    return distort(crop.unsqueeze(0), kind, level, generator=generator)[0]


def _batch(photos: Sequence[torch.Tensor], sampler: _Sampler, config: FinetuneConfig) -> tuple[list[int], torch.Tensor]:
    idx = sampler.indices(config.batch_size)
    crops = [_distorted(sampler.crop(photos[i], config.crop), config, sampler.generator) for i in idx]
    return idx, torch.stack(crops)


def _module(model: nn.Module) -> nn.Module:
    return model.trainable() if isinstance(model, LoadedModel) else model


def finetune(
    model: nn.Module,
    photos: Sequence[torch.Tensor],
    config: FinetuneConfig,
    out_dir: str | os.PathLike,
    *,
    scores: Sequence[float] | None = None,
    resume: bool = False,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune a copy of ``model`` (an ``nn.Module`` or a :class:`LoadedModel`; it is the
    teacher: its weights are left unchanged and its parameters frozen) on crops of ``photos`` (each (3, H, W) in [0, 1]); write
    ``out_dir``/checkpoint.pt every ``checkpoint_every`` steps and at the end, and
    ``out_dir``/train_log.csv (one row per step). ``scores``: one human score per photograph
    (on the model's scale), needed by ``targets="human"``.

    With ``resume=True`` the run continues from ``out_dir``/checkpoint.pt (same config but
    ``steps``, same teacher) and ends with the same weights as an uninterrupted run."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    small = [i for i, p in enumerate(photos) if min(p.shape[-2:]) < config.crop]
    if small:
        raise ValueError(f"{len(small)} photograph(s) are smaller than the {config.crop}px crop "
                         f"(e.g. index {small[0]}); lower the crop size.")
    if config.targets == "human" and (scores is None or len(scores) != len(photos)):
        raise ValueError("targets='human' needs one score per photograph.")
    teacher = _module(model).to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = copy.deepcopy(teacher)
    for p in student.parameters():
        p.requires_grad_(True)
    student.eval()  # dropout off: the noise and the data are the only randomness
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    random.seed(config.seed)
    optimizer = torch.optim.Adam(student.parameters(), lr=config.lr)
    sampler = _Sampler(len(photos), config.seed)
    ckpt_path, log_path = out / "checkpoint.pt", out / "train_log.csv"
    teacher_print = fingerprint(teacher)
    step = 0
    if resume:
        ckpt = read_checkpoint(ckpt_path, "fine-tuning checkpoint")
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{ckpt_path} is not a certiqa fine-tuning checkpoint.")
        if ckpt["config"] != config.fingerprint() or ckpt["teacher"] != teacher_print:
            raise ValueError(f"{ckpt_path} was written with other settings or another teacher; resume with the "
                             f"same model and options (checkpoint: {ckpt['config']}; now: {config.fingerprint()}).")
        student.load_state_dict(ckpt["student"])
        optimizer.load_state_dict(ckpt["optimizer"])
        sampler.load(ckpt["sampler"])
        _set_rng_states(ckpt["rng"])
        step, score_scale = int(ckpt["step"]), float(ckpt["score_scale"])
        _truncate_csv(log_path, STEP_FIELDS, step)
    else:
        log_path.unlink(missing_ok=True)
        if config.targets == "teacher":  # fixed-seed crops, so the scale is the same on every (re)start
            probe = _Sampler(len(photos), config.seed + 1)
            with torch.no_grad():
                crops = torch.cat([_batch(photos, probe, config)[1] for _ in range(max(1, 64 // config.batch_size))])
                values = torch.cat([teacher(c.to(device)).reshape(-1) for c in crops.split(16)]).cpu()
        else:
            values = torch.tensor([float(s) for s in scores or ()])
        score_scale = float(values.std())
        if not math.isfinite(score_scale) or score_scale <= 0:
            score_scale = 1.0

    def checkpoint() -> None:
        _save_checkpoint(ckpt_path, {
            "format": CHECKPOINT_FORMAT, "step": step, "config": config.fingerprint(), "teacher": teacher_print,
            "score_scale": score_scale, "student": student.state_dict(), "optimizer": optimizer.state_dict(),
            "sampler": sampler.state(), "rng": _rng_states(),
        })

    bar = tqdm(total=config.steps, initial=step, disable=not progress, desc="fine-tune", dynamic_ncols=True)
    started = time.perf_counter()
    while step < config.steps:
        idx, crops = _batch(photos, sampler, config)
        noise = torch.randn((config.draws, *crops.shape), generator=sampler.generator)
        crops = crops.to(device)
        with torch.no_grad():
            targets = (teacher(crops).reshape(-1) if config.targets == "teacher"
                       else torch.tensor([float(scores[i]) for i in idx], device=device))  # type: ignore[index]
        loss, terms = finetune_losses(student, crops, targets, noise.to(device), config, score_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.lr_schedule == "cosine":
            for group in optimizer.param_groups:
                group["lr"] = config.lr * (1 + math.cos(math.pi * step / config.steps)) / 2
        optimizer.step()
        step += 1
        _append_csv(log_path, STEP_FIELDS, {"step": step, "loss": float(loss.detach()), **terms,
                                             "lr": optimizer.param_groups[0]["lr"],
                                             "seconds": round(time.perf_counter() - started, 3)})
        bar.update(1)
        bar.set_postfix({k: f"{v:.4g}" for k, v in terms.items() if k != "clean"})
        if step % config.checkpoint_every == 0 or step == config.steps:
            checkpoint()
    bar.close()
    return FinetuneResult(student=student.eval(), step=step, score_scale=score_scale)


def save_student(
    student: nn.Module,
    path: str | os.PathLike,
    *,
    teacher: LoadedModel,
    config: FinetuneConfig,
    steps: int,
    photos: Sequence[str] = (),
) -> Path:
    """Write the student so that ``load_model(path)`` loads it, without pickled objects, with
    the teacher's ``lower_better`` / ``score_range`` / ``min_size`` and a ``provenance``
    dict (teacher spec and SHA-256 of its file, sigma, the recipe with its seed, the steps,
    the photo sources, and what a certificate is about) that :func:`load_model` exposes and
    every certification row records.

    A CNNIQA student is a ``torch.save`` dict (``format``, ``state_dict``, ``certiqa``
    metadata) that also loads as ``cnniqa:PATH``; any other student a TorchScript archive
    (``torch.jit.script``) with the metadata in its ``certiqa.json``."""
    path = Path(path)
    provenance = {
        "kind": STUDENT_FORMAT,
        "teacher": teacher.spec,
        "teacher_sha256": file_sha256(teacher.file) if teacher.file is not None else None,
        "sigma": config.sigma,
        "seed": config.seed,
        "steps": steps,
        "recipe": config.fingerprint(),
        "photos": list(photos),
        "certifies": CERTIFIES,
    }
    meta = {
        "lower_better": teacher.lower_better,
        "score_range": list(teacher.score_range) if teacher.score_range is not None else None,
        "min_size": teacher.min_size,
        "provenance": provenance,
    }
    student = student.eval()
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(student, CNNIQA):
        state = {k: v.detach().cpu().clone() for k, v in student.state_dict().items()}
        torch.save({"format": STUDENT_FORMAT, "state_dict": state, "certiqa": meta}, tmp)
    else:
        torch.jit.save(torch.jit.script(student), str(tmp), _extra_files={METADATA_FILE: json.dumps(meta)})
    os.replace(tmp, path)
    return path
