"""How the default model (:func:`certiqa.models.default_model`) is trained: SSIM
regression plus a ranking over distortion levels, on free photographs.

The data: photographs bundled with scikit-image that are public domain or CC0
and load offline (:data:`TRAINING_PHOTOS`; :data:`VALIDATION_PHOTOS` are held
out), area-downscaled to a few scales and rounded to 8 bits. Each training
example is a *ladder* (RankIQA, Liu et al. 2017): one random ``CROP`` x ``CROP``
crop, randomly flipped and rotated, in its pristine version and at ``rungs``
increasing severities of one distortion of :data:`SEVERITY` (drawn on a
continuous scale with :func:`certiqa.distortions.distort_with`, from very mild
to strong, denser at the mild end), each rounded to 8 bits. Optionally the
pristine version is first made camera-like (unsharp masking, grain), so that
crisp detail counts as pristine.

Each version's label is 100 x the mean SSIM (luma, 11x11 Gaussian window) to the
pristine crop over the region CNNIQA reads; higher is better. The loss is the
L1 error to the labels plus ``rank_weight`` x a pairwise hinge inside each
ladder: a milder version must score above a stronger one by ``margin`` points
whenever their labels differ by at least ``min_gap`` (the order comes from the
severities; the gap filter skips versions that look the same, such as blur on
a flat sky).

scikit-image is a training-time extra (``pip install certiqa[train]``); nothing
here downloads anything.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .._checks import check_int, check_nonnegative, check_positive
from ..distortions import distort_with
from ..io import downscale_longer_side
from ..metrics import srocc
from ..loading import read_checkpoint
from .cnniqa import CNNIQA, PATCH, rgb_to_luma

__all__ = [
    "TRAINING_PHOTOS",
    "VALIDATION_PHOTOS",
    "CROP",
    "SEVERITY",
    "VALIDATION_LADDERS",
    "load_skimage_photos",
    "photo_scales",
    "severity_parameter",
    "ssim_map",
    "Ladders",
    "sample_ladders",
    "ladder_loss",
    "LadderConfig",
    "TrainResult",
    "validate_ladders",
    "fit_default_model",
]

# scikit-image photographs that ship inside the wheel (no pooch download) and are
# public domain or CC0 according to their skimage.data docstrings. ``clock`` is left
# out: it is a motion-blurred photograph, not a pristine one.
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
    "text",
)
VALIDATION_PHOTOS = ("chelsea", "rocket")

# A CROP x CROP crop gives CNNIQA 3 x 3 patches of 32 px (rows range(0, CROP - 32, 32)).
CROP = 3 * PATCH + 1
_READ = 3 * PATCH  # the region of a crop that CNNIQA reads
# Distortions act on a _REGION x _REGION square with the crop at offset _PAD, so blur
# kernels see real neighbours; _PAD a multiple of 8 keeps JPEG blocks aligned with
# CNNIQA's patch grid, and _REGION a multiple of 16 keeps kornia's JPEG fast.
_PAD = 16
_REGION = 128
_MAX_SIDE = 512

# The distortions of a ladder: (mildest, strongest parameter, log scale). Severity u in
# [0, 1] maps to the parameter by linear (or log-linear) interpolation; see
# severity_parameter. Left out: brightness and saturation, which CNNIQA's locally
# normalised luma patches barely see.
SEVERITY: dict[str, tuple[float, float, bool]] = {
    "gaussian_blur": (0.3, 5.0, True),  # sigma, px
    "motion_blur": (3.0, 27.0, False),  # length, px (odd)
    "gaussian_noise": (0.003, 0.5, True),  # std (0.5: nearly saturated)
    "jpeg": (90.0, 4.0, True),  # quality
    "contrast": (0.9, 0.15, False),  # factor
    "pixelate": (2.0, 8.0, False),  # down-sampling factor
    "quantize": (6.0, 2.0, False),  # bits
}
_INTEGER = {"motion_blur", "pixelate", "quantize"}

# Full-image ladders of the held-out photographs used for model selection:
# parameters of distort_with, mildest first.
VALIDATION_LADDERS: dict[str, tuple[float, ...]] = {
    "gaussian_blur": (0.4, 0.8, 1.5, 2.5, 4.0),
    "jpeg": (75.0, 50.0, 30.0, 15.0, 6.0),
    "gaussian_noise": (0.005, 0.015, 0.03, 0.06, 0.12),
}


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
        photos.append(downscale_longer_side(x, max_side))
    return photos


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8)


def photo_scales(photos: Sequence[torch.Tensor], scales: Sequence[float]) -> list[torch.Tensor]:
    """Every photo (3, H, W) in [0, 1] area-downscaled by every factor in ``scales`` (<= 1)
    and rounded to 8 bits: (3, h, w) uint8 tensors, photo-major. Versions whose shorter
    side would fall below 128 pixels (the region a ladder is cut from) are skipped."""
    if not scales or any(not 0 < s <= 1 for s in scales):
        raise ValueError(f"scales must be factors in (0, 1], got {list(scales)!r}.")
    out = []
    for photo in photos:
        height, width = photo.shape[1:]
        for s in scales:
            size = (round(height * s), round(width * s))
            if min(size) < _REGION:
                continue
            scaled = F.interpolate(photo[None], size=size, mode="area")[0] if s < 1 else photo
            out.append(_to_uint8(scaled))
    if not out:
        raise ValueError(f"no photo is at least {_REGION} px on its shorter side at any of the scales {list(scales)}.")
    return out


def severity_parameter(name: str, u: float) -> float:
    """The :func:`~certiqa.distortions.distort_with` parameter of distortion ``name`` at
    severity ``u`` in [0, 1] (0 mildest, 1 strongest), per :data:`SEVERITY`; integer
    parameters are rounded (motion lengths to odd numbers)."""
    if name not in SEVERITY:
        raise ValueError(f"no severity scale for {name!r}; choose one of {sorted(SEVERITY)}.")
    if not 0.0 <= u <= 1.0:
        raise ValueError(f"severity must be in [0, 1], got {u!r}.")
    mild, strong, log = SEVERITY[name]
    value = math.exp(math.log(mild) + u * (math.log(strong) - math.log(mild))) if log else mild + u * (strong - mild)
    if name == "motion_blur":
        return float(2 * round((value - 1) / 2) + 1)
    return float(round(value)) if name in _INTEGER else value


_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5


def ssim_map(reference: torch.Tensor, distorted: torch.Tensor) -> torch.Tensor:
    """SSIM map of the luma of (B, 3, H, W) images in [0, 1] (Wang et al. 2004: 11x11
    Gaussian window of sigma 1.5, K1 0.01, K2 0.03), valid positions only:
    (B, 1, H - 10, W - 10), the map at pixel (i + 5, j + 5) of the inputs. Equals
    ``kornia.metrics.ssim(luma, luma, 11, padding="valid")``, computed with separable
    filters (several times faster on a CPU)."""
    if reference.shape != distorted.shape or reference.ndim != 4 or min(reference.shape[-2:]) < _SSIM_WINDOW:
        raise ValueError(f"ssim_map needs two (B, 3, H, W) batches of one shape with H, W >= {_SSIM_WINDOW}, "
                         f"got {tuple(reference.shape)} and {tuple(distorted.shape)}.")
    taps = torch.arange(_SSIM_WINDOW, dtype=reference.dtype, device=reference.device) - _SSIM_WINDOW // 2
    window = torch.exp(-taps**2 / (2 * _SSIM_SIGMA**2))
    window = window / window.sum()
    a, b = rgb_to_luma(reference), rgb_to_luma(distorted)
    stats = torch.cat((a, b, a * a, b * b, a * b))
    stats = F.conv2d(F.conv2d(stats, window.view(1, 1, 1, -1)), window.view(1, 1, -1, 1))
    mean_a, mean_b, sq_a, sq_b, prod = stats.chunk(5)
    c1, c2 = 0.01**2, 0.03**2
    var_a, var_b, cov = sq_a - mean_a**2, sq_b - mean_b**2, prod - mean_a * mean_b
    return ((2 * mean_a * mean_b + c1) * (2 * cov + c2)) / ((mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2))


@dataclass
class Ladders:
    """Ladders of crops: ``images`` (L, V, 3, CROP, CROP) uint8 (rung 0 pristine, then
    increasing severity), ``labels`` (L, V) = 100 x SSIM to rung 0 in [0, 100],
    ``distortion`` the name of each ladder's distortion."""

    images: torch.Tensor
    labels: torch.Tensor
    distortion: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, index: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Ladders ``index`` as float images (len(index), V, 3, CROP, CROP) in [0, 1] and their
        labels; with a ``generator``, randomly flipped and rotated by a multiple of 90
        degrees (one draw for the batch; the labels do not change)."""
        x = self.images[index].float() / 255.0
        if generator is not None:
            if torch.rand((), generator=generator) < 0.5:
                x = x.flip(-1)
            x = torch.rot90(x, int(torch.randint(4, (), generator=generator)), dims=(-2, -1))
        return x, self.labels[index]


def _camera_like(x: torch.Tensor, generator: torch.Generator, grain: float, sharpen: float) -> torch.Tensor:
    """With probability 1/2 each, an unsharp mask (amount uniform in [0, ``sharpen``], blur
    sigma 1 px) and Gaussian grain (std uniform in [0, ``grain``]), as camera processing
    and sensors leave on real photographs; rounded to 8 bits. (B, 3, H, W) in [0, 1]."""
    amount = float(torch.rand((), generator=generator)) * sharpen
    std = float(torch.rand((), generator=generator)) * grain
    use_sharpen, use_grain = (torch.rand(2, generator=generator) < 0.5).tolist()
    if sharpen > 0 and use_sharpen:
        x = x + amount * (x - distort_with(x, "gaussian_blur", 1.0))
    if grain > 0 and use_grain:
        x = distort_with(x.clamp(0, 1), "gaussian_noise", std, generator)
    return _to_uint8(x).float() / 255.0


def sample_ladders(
    bank: Sequence[torch.Tensor],
    count: int,
    rungs: int,
    generator: torch.Generator,
    distortions: Sequence[str] = tuple(SEVERITY),
    *,
    group: int = 16,
    grain: float = 0.0,
    sharpen: float = 0.0,
    progress: bool = False,
) -> Ladders:
    """Draw ``count`` ladders of ``rungs`` distorted versions (plus the pristine one) from
    random crops of the uint8 photos in ``bank`` (see :func:`photo_scales`).

    Ladders come in groups of ``group`` (the last one smaller) that share a distortion
    and ``rungs`` severities (the squares of uniform draws in [0, 1], sorted: denser at
    the mild end, where the order is hardest to see), so each severity is one batched
    call; every ladder has its own photo, crop position, flip and 90-degree rotation.
    With ``grain`` or ``sharpen`` > 0, the pristine version of a group is first made
    camera-like (see :func:`_camera_like`); it is still the reference (label 100).
    Everything comes from ``generator``: the result is a function of its state."""
    check_int("count", count)
    check_int("rungs", rungs)
    check_int("group", group)
    unknown = [d for d in distortions if d not in SEVERITY]
    if unknown or not distortions:
        raise ValueError(f"distortions must be names from {sorted(SEVERITY)}, got {list(distortions)!r}.")
    images, labels, names = [], [], []
    bar = tqdm(total=count, desc="ladders", disable=not progress)
    while len(names) < count:
        regions = []
        for _ in range(min(group, count - len(names))):
            photo = bank[int(torch.randint(len(bank), (), generator=generator))]
            top = int(torch.randint(photo.shape[1] - _REGION + 1, (), generator=generator))
            left = int(torch.randint(photo.shape[2] - _REGION + 1, (), generator=generator))
            region = photo[:, top : top + _REGION, left : left + _REGION]
            if torch.rand((), generator=generator) < 0.5:
                region = region.flip(-1)
            regions.append(torch.rot90(region, int(torch.randint(4, (), generator=generator)), dims=(-2, -1)))
        pristine = _camera_like(torch.stack(regions).float() / 255.0, generator, grain, sharpen)
        name = distortions[int(torch.randint(len(distortions), (), generator=generator))]
        severities = torch.rand(rungs, generator=generator).square().sort().values  # denser at the mild end
        versions = [pristine] + [
            _to_uint8(distort_with(pristine, name, severity_parameter(name, float(u)), generator)).float() / 255.0
            for u in severities
        ]
        stack = torch.stack(versions, dim=1)  # (n, V, 3, R, R)
        n, v = stack.shape[:2]
        # the SSIM map over the region CNNIQA reads, from the region's real pixels around it
        near = stack[..., _PAD - 5 : _PAD + _READ + 5, _PAD - 5 : _PAD + _READ + 5].reshape(n * v, 3, _READ + 10, -1)
        quality = ssim_map(near[::v].repeat_interleave(v, dim=0), near)[:, 0]
        images.append(_to_uint8(stack[..., _PAD : _PAD + CROP, _PAD : _PAD + CROP]))
        labels.append(100.0 * quality.mean(dim=(1, 2)).clamp(0.0, 1.0).reshape(n, v))
        names += [name] * n
        bar.update(n)
    bar.close()
    return Ladders(images=torch.cat(images), labels=torch.cat(labels), distortion=names)


def ladder_loss(
    pred: torch.Tensor, labels: torch.Tensor, *, rank_weight: float, margin: float, min_gap: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 regression to ``labels`` plus ``rank_weight`` x the ranking hinge inside each ladder.

    ``pred`` and ``labels`` are (L, V), rungs in increasing severity. For rungs i < j of a
    ladder with ``labels[i] - labels[j] >= min_gap`` the hinge charges
    ``max(0, margin - (pred[i] - pred[j]))`` (RankIQA's constant margin, so even a mild
    distortion must cost ``margin`` points); the mean is over those pairs (0 when there
    are none). Returns (total, {"l1", "rank", "pairs"})."""
    if pred.shape != labels.shape or pred.ndim != 2:
        raise ValueError(
            f"pred and labels must both be (ladders, rungs), got {tuple(pred.shape)} and {tuple(labels.shape)}."
        )
    l1 = (pred - labels).abs().mean()
    rungs = pred.shape[1]
    milder = torch.ones(rungs, rungs, dtype=torch.bool, device=pred.device).triu(1)  # (i, j): i < j
    label_gap = labels[:, :, None] - labels[:, None, :]
    counted = milder & (label_gap >= min_gap)
    if counted.any():
        hinge = torch.relu(margin - (pred[:, :, None] - pred[:, None, :]))
        rank = hinge[counted].mean()
    else:
        rank = pred.sum() * 0.0
    total = l1 + rank_weight * rank if rank_weight > 0 else l1
    return total, {"l1": float(l1.detach()), "rank": float(rank.detach()), "pairs": float(counted.sum())}


@dataclass(frozen=True)
class LadderConfig:
    """Everything that defines a training run of :func:`fit_default_model` (a resumed run
    must have the same).

    ``bank`` ladders of ``rungs + 1`` crops are drawn once (seed ``seed``; references
    made camera-like with ``grain`` and ``sharpen``, see :func:`sample_ladders`); a step takes
    ``ladders`` of them at random, flipped and rotated. The learning rate follows a cosine
    decay from ``lr`` to ``lr / 20``."""

    steps: int = 1000
    ladders: int = 8
    rungs: int = 4
    bank: int = 2000
    lr: float = 1e-3
    rank_weight: float = 2.0
    margin: float = 3.0
    min_gap: float = 0.3
    kernels: int = 50
    hidden: int = 800
    scales: tuple[float, ...] = (1.0, 0.8, 0.6, 0.45)
    grain: float = 0.0
    sharpen: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "ladders", "rungs", "bank", "kernels", "hidden"):
            check_int(name, getattr(self, name))
        check_positive("lr", self.lr)
        check_positive("margin", self.margin)
        check_nonnegative("rank_weight", self.rank_weight)
        check_nonnegative("min_gap", self.min_gap)
        check_nonnegative("grain", self.grain)
        check_nonnegative("sharpen", self.sharpen)


@dataclass
class TrainResult:
    """A fitted model and its log: per-logging-step dicts (step, l1, rank, pairs, seconds
    and the validation figures of :func:`validate_ladders`); ``seconds`` of training (over
    all resumed parts) and ``data_seconds`` to draw the ladders (this part)."""

    model: CNNIQA
    history: list[dict[str, float]]
    seconds: float
    data_seconds: float


@torch.no_grad()
def validate_ladders(model: CNNIQA, photos: Sequence[torch.Tensor], crop_ladders: Ladders) -> dict[str, float]:
    """Model-selection figures on held-out data.

    ``image_srocc``: mean over (photo, distortion) groups of the SROCC between the model's
    full-image scores and minus the rung (0 pristine, then :data:`VALIDATION_LADDERS`);
    ``image_srocc_<distortion>`` per distortion. ``pair_accuracy``: the fraction of crop
    pairs of ``crop_ladders`` (milder above stronger, label gap >= 0.5) ordered correctly;
    ``crop_srocc``: SROCC between the crops' scores and labels."""
    was_training = model.training
    model.eval()
    by_distortion: dict[str, list[float]] = {}
    for photo in photos:
        pristine = _to_uint8(photo[None]).float() / 255.0
        for name, parameters in VALIDATION_LADDERS.items():
            versions = [pristine] + [
                _to_uint8(distort_with(pristine, name, p, torch.Generator().manual_seed(0))).float() / 255.0
                for p in parameters
            ]
            scores = torch.cat([model(v) for v in versions])
            by_distortion.setdefault(name, []).append(srocc(scores, -torch.arange(len(versions), dtype=torch.float64)))
    shape = crop_ladders.images.shape
    flat = crop_ladders.images.reshape(-1, *shape[2:])
    pred = torch.cat([model(chunk.float() / 255.0) for chunk in flat.split(256)])
    pred = pred.reshape(shape[:2])
    labels = crop_ladders.labels
    milder = torch.ones(shape[1], shape[1], dtype=torch.bool).triu(1)
    counted = milder & ((labels[:, :, None] - labels[:, None, :]) >= 0.5)
    correct = (pred[:, :, None] > pred[:, None, :])[counted]
    model.train(was_training)
    out = {"image_srocc": float(np.mean([v for vs in by_distortion.values() for v in vs]))}
    out.update({f"image_srocc_{k}": float(np.mean(v)) for k, v in by_distortion.items()})
    out["pair_accuracy"] = float(correct.float().mean()) if correct.numel() else math.nan
    out["crop_srocc"] = srocc(pred.reshape(-1), labels.reshape(-1))
    return out


_CHECKPOINT_FORMAT = "certiqa-default-model-train-v1"


def _schedule(steps: int) -> Callable[[int], float]:
    return lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))


def fit_default_model(
    photos: Sequence[torch.Tensor],
    config: LadderConfig = LadderConfig(),
    *,
    val_photos: Sequence[torch.Tensor] = (),
    val_ladders: int = 200,
    log_every: int = 250,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    resume: bool = False,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> TrainResult:
    """Fit a CNNIQA (higher is better, scores 0-100) on ladders of ``photos`` (see the module doc).

    The ladder bank is drawn first (``data_seconds`` in the result). Every ``log_every``
    steps (and at the end) the mean loss terms and, with
    ``val_photos``, the figures of :func:`validate_ladders` on them (``val_ladders``
    fixed crop ladders, seed ``config.seed + 1``) are logged. With ``checkpoint``, the
    run state (model, optimizer, step, generator, history) is written there every
    ``checkpoint_every`` steps and at the end; ``resume=True`` continues from it (same
    config) and gives the same weights and log as an uninterrupted run."""
    check_int("log_every", log_every)
    check_int("checkpoint_every", checkpoint_every)
    data_start = time.perf_counter()
    train = sample_ladders(photo_scales(photos, config.scales), config.bank, config.rungs,
                           torch.Generator().manual_seed(config.seed), grain=config.grain, sharpen=config.sharpen,
                           progress=progress)
    crop_val = (
        sample_ladders(photo_scales(val_photos, config.scales), val_ladders, config.rungs,
                       torch.Generator().manual_seed(config.seed + 1))
        if val_photos else None
    )
    data_seconds = time.perf_counter() - data_start
    log(f"{len(train)} training ladders of {config.rungs + 1} crops from {len(photos)} photos ({data_seconds:.0f} s)")
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed + 2)
    model = CNNIQA(config.kernels, config.hidden, lower_better=False, score_range=(0.0, 100.0))
    with torch.no_grad():  # start near the mean label, so early steps learn differences, not the offset
        model.fc3.bias.fill_(80.0)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(config.steps))
    fingerprint = {**dataclasses.asdict(config), "scales": list(config.scales)}
    history: list[dict[str, float]] = []
    step, spent = 0, 0.0
    sums: dict[str, float] = {"l1": 0.0, "rank": 0.0, "pairs": 0.0}  # loss terms since the last log line
    count = 0
    path = Path(checkpoint) if checkpoint is not None else None
    if resume:
        if path is None:
            raise ValueError("resume=True needs the checkpoint path of the run to continue.")
        state = read_checkpoint(path, "default-model training checkpoint")
        if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a default-model training checkpoint.")
        if state["config"] != fingerprint:
            raise ValueError(f"{path} was written with other settings; resume with the same options.\n"
                             f"checkpoint: {state['config']}\nnow:        {fingerprint}")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        sched.load_state_dict(state["scheduler"])
        step, spent, history = int(state["step"]), float(state["seconds"]), list(state["history"])
        sums, count = dict(state["sums"]), int(state["count"])

    def save() -> None:
        assert path is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"format": _CHECKPOINT_FORMAT, "config": fingerprint, "step": step, "model": model.state_dict(),
                    "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "generator": gen.get_state(),
                    "torch_rng": torch.get_rng_state(), "seconds": spent + time.perf_counter() - start,
                    "history": history, "sums": sums, "count": count}, tmp)
        os.replace(tmp, path)

    start = time.perf_counter()
    bar = tqdm(total=config.steps, initial=step, desc="training", disable=not progress)
    while step < config.steps:
        model.train()
        images, labels = train.batch(torch.randint(len(train), (config.ladders,), generator=gen), gen)
        pred = model(images.reshape(-1, *images.shape[2:])).reshape(labels.shape)
        loss, terms = ladder_loss(pred, labels, rank_weight=config.rank_weight, margin=config.margin,
                                  min_gap=config.min_gap)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        for k in sums:
            sums[k] += terms[k]
        count += 1
        if step % log_every == 0 or step == config.steps:
            entry: dict[str, float] = {"step": float(step), **{k: v / count for k, v in sums.items()},
                                       "seconds": spent + time.perf_counter() - start}
            if crop_val is not None:
                entry.update(validate_ladders(model, val_photos, crop_val))
            history.append(entry)
            log(" ".join(f"{k}={v:.4g}" for k, v in entry.items()))
            bar.set_postfix(l1=f"{entry['l1']:.2f}", rank=f"{entry['rank']:.2f}")
            sums, count = dict.fromkeys(sums, 0.0), 0
        if path is not None and (step % checkpoint_every == 0 or step == config.steps):
            save()
    bar.close()
    model.eval()
    return TrainResult(model=model, history=history, seconds=spent + time.perf_counter() - start,
                       data_seconds=data_seconds)
