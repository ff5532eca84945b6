"""Training of the default NR-IQA model on synthetically distorted free photographs.

The data: photographs bundled with scikit-image that are public domain or CC0
and load offline (:data:`TRAINING_PHOTOS`, :data:`VALIDATION_PHOTOS`), each
randomly rescaled, distorted with every distortion of :mod:`certiqa.distortions`
at every level (plus several pristine copies), rounded to 8 bits, and cut into
random ``CROP`` x ``CROP`` crops. The label of a crop is a full-reference score:
100 x the mean SSIM (on luma, 11x11 Gaussian window) between the distorted and the
pristine image over the region of the crop that CNNIQA reads. Higher is better.

scikit-image is a training-time extra (``pip install certiqa[train]``); nothing
here downloads anything.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import kornia
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ._checks import check_int, check_positive
from .distortions import DISTORTIONS, LEVELS, distort
from .metrics import plcc, srocc
from .models.cnniqa import CNNIQA, PATCH, rgb_to_luma

__all__ = [
    "TRAINING_PHOTOS",
    "VALIDATION_PHOTOS",
    "CROP",
    "SyntheticIQAData",
    "load_skimage_photos",
    "ssim_map",
    "build_synthetic_dataset",
    "TrainResult",
    "fit_cnniqa",
]

# scikit-image photographs that ship inside the wheel (no pooch download) and are
# public domain or CC0 according to their skimage.data docstrings.
TRAINING_PHOTOS = (
    "astronaut",
    "camera",
    "coffee",
    "coins",
    "hubble_deep_field",
    "immunohistochemistry",
    "brick",
    "grass",
    "gravel",
    "clock",
    "text",
)
VALIDATION_PHOTOS = ("chelsea", "rocket")

# A CROP x CROP crop gives CNNIQA 3 x 3 patches of 32 px (rows range(0, CROP - 32, 32)).
CROP = 3 * PATCH + 1
_READ = 3 * PATCH  # the region of a crop that CNNIQA reads
_MAX_SIDE = 512


def load_skimage_photos(names: Sequence[str], max_side: int = _MAX_SIDE) -> list[torch.Tensor]:
    """Load scikit-image sample photographs as (3, H, W) float32 tensors in [0, 1].

    Grayscale photographs are repeated to three channels; photographs whose longer
    side exceeds ``max_side`` are area-downscaled to it."""
    try:
        from skimage import data
    except ImportError:
        raise ImportError(
            "training the default model needs scikit-image: pip install 'certiqa[train]' (or scikit-image)."
        ) from None
    photos = []
    for name in names:
        loader = getattr(data, name, None)
        if loader is None:
            raise ValueError(f"skimage.data has no photograph {name!r}.")
        arr = np.asarray(loader())
        if arr.dtype != np.uint8:
            raise ValueError(f"skimage.data.{name} is {arr.dtype}, expected an 8-bit photograph.")
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        x = torch.from_numpy(np.ascontiguousarray(arr[:, :, :3])).permute(2, 0, 1).float() / 255.0
        scale = max_side / max(x.shape[1:])
        if scale < 1:
            size = (round(x.shape[1] * scale), round(x.shape[2] * scale))
            x = F.interpolate(x[None], size=size, mode="area")[0]
        photos.append(x)
    return photos


def ssim_map(reference: torch.Tensor, distorted: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM of the luma of (B, 3, H, W) images in [0, 1]: (B, 1, H, W), 11x11 window."""
    return kornia.metrics.ssim(rgb_to_luma(reference), rgb_to_luma(distorted), 11, max_val=1.0)


@dataclass
class SyntheticIQAData:
    """Crops (N, 3, CROP, CROP) uint8 with labels (N,) in [0, 100] (higher is better).

    ``distortion`` holds an index into ``names`` (-1 for pristine crops) and
    ``level`` the severity (0 for pristine); ``photo`` indexes the source photo."""

    crops: torch.Tensor
    scores: torch.Tensor
    distortion: torch.Tensor
    level: torch.Tensor
    photo: torch.Tensor
    names: tuple[str, ...] = field(default_factory=lambda: tuple(DISTORTIONS))

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def images(self, index: torch.Tensor) -> torch.Tensor:
        """Float crops (len(index), 3, CROP, CROP) in [0, 1]."""
        return self.crops[index].float() / 255.0


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8)


def build_synthetic_dataset(
    photos: Sequence[torch.Tensor],
    *,
    crops_per_version: int = 6,
    pristine_copies: int = 5,
    scale_range: tuple[float, float] = (0.5, 1.0),
    seed: int = 0,
    progress: bool = True,
) -> SyntheticIQAData:
    """Distort each photo with every distortion at every level and cut labelled crops.

    For each photo and each of the ``9 x 5`` (distortion, level) pairs plus
    ``pristine_copies`` undistorted versions, the photo is rescaled by a random
    factor in ``scale_range``, distorted, rounded to 8 bits, and cut into
    ``crops_per_version`` random crops of CROP x CROP pixels; each crop's label is
    100 x the mean luma SSIM over the region CNNIQA reads. Deterministic given ``seed``.
    """
    check_int("crops_per_version", crops_per_version)
    check_int("pristine_copies", pristine_copies, minimum=0)
    lo, hi = scale_range
    if not 0 < lo <= hi:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range!r}.")
    gen = torch.Generator().manual_seed(seed)
    names = tuple(DISTORTIONS)
    versions = [(-1, 0)] * pristine_copies + [(d, lvl) for d in range(len(names)) for lvl in LEVELS]
    crops, scores, dist_idx, levels, photo_idx = [], [], [], [], []
    bar = tqdm(total=len(photos) * len(versions), desc="synthetic data", disable=not progress)
    for p, photo in enumerate(photos):
        for d, lvl in versions:
            scale = lo + (hi - lo) * float(torch.rand((), generator=gen))
            height, width = photo.shape[1:]
            size = (max(CROP, round(height * scale)), max(CROP, round(width * scale)))
            ref = F.interpolate(photo[None], size=size, mode="area") if size != (height, width) else photo[None]
            ref = _to_uint8(ref).float() / 255.0
            out = ref if d < 0 else distort(ref, names[d], lvl, generator=gen)
            out = _to_uint8(out)
            quality = ssim_map(ref, out.float() / 255.0)[0, 0]
            for _ in range(crops_per_version):
                top = int(torch.randint(0, size[0] - CROP + 1, (), generator=gen))
                left = int(torch.randint(0, size[1] - CROP + 1, (), generator=gen))
                crops.append(out[0, :, top : top + CROP, left : left + CROP])
                scores.append(100.0 * quality[top : top + _READ, left : left + _READ].mean().clamp(0, 1))
                dist_idx.append(d)
                levels.append(lvl)
                photo_idx.append(p)
            bar.update()
    bar.close()
    return SyntheticIQAData(
        crops=torch.stack(crops),
        scores=torch.stack(scores).float(),
        distortion=torch.tensor(dist_idx),
        level=torch.tensor(levels),
        photo=torch.tensor(photo_idx),
        names=names,
    )


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and 90-degree rotations per batch (label-preserving)."""
    if torch.rand((), generator=gen) < 0.5:
        x = x.flip(-1)
    return torch.rot90(x, int(torch.randint(0, 4, (), generator=gen)), dims=(-2, -1))


@dataclass
class TrainResult:
    """A fitted model and its log: per-logging-step dicts (step, loss, val_srocc, val_plcc, seconds)."""

    model: CNNIQA
    history: list[dict[str, float]]
    seconds: float


@torch.no_grad()
def _predict(model: CNNIQA, data: SyntheticIQAData, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    out = [model(data.images(torch.arange(i, min(i + batch_size, len(data))))) for i in range(0, len(data), batch_size)]
    return torch.cat(out)


def fit_cnniqa(
    train: SyntheticIQAData,
    val: SyntheticIQAData | None = None,
    *,
    kernels: int = 50,
    hidden: int = 800,
    steps: int = 2000,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    log_every: int = 250,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> TrainResult:
    """Fit a CNNIQA (higher-is-better, scores 0-100) to the crop labels with Adam and an L1 loss.

    The learning rate follows a cosine decay from ``lr`` to ``lr / 20``. Every
    ``log_every`` steps (and at the end) the mean training loss and, when ``val``
    is given, the validation SROCC/PLCC are passed to ``log``."""
    check_int("steps", steps)
    check_int("batch_size", batch_size)
    check_int("log_every", log_every)
    check_positive("lr", lr)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = CNNIQA(kernels, hidden, lower_better=False, score_range=(0.0, 100.0))
    with torch.no_grad():  # start at the mean label, so early steps learn ranking, not the offset
        model.fc3.bias.fill_(float(train.scores.mean()))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    running, count = 0.0, 0
    bar = tqdm(range(1, steps + 1), desc="training", disable=not progress)
    for step in bar:
        model.train()
        idx = torch.randint(0, len(train), (batch_size,), generator=gen)
        x = _augment(train.images(idx), gen)
        loss = F.l1_loss(model(x), train.scores[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += loss.item()
        count += 1
        if step % log_every == 0 or step == steps:
            entry = {"step": float(step), "loss": running / count, "seconds": time.perf_counter() - start}
            if val is not None:
                pred = _predict(model, val)
                entry["val_srocc"] = srocc(pred, val.scores)
                entry["val_plcc"] = plcc(pred, val.scores)
            history.append(entry)
            log(" ".join(f"{k}={v:.4g}" for k, v in entry.items()))
            bar.set_postfix(loss=f"{entry['loss']:.3f}")
            running, count = 0.0, 0
    model.eval()
    return TrainResult(model=model, history=history, seconds=time.perf_counter() - start)
