"""Comparing smoothed models with and without denoisers: correlation with the clean
base scores and with human scores, ordinal agreement within ladders of one
distortion, the shift of the smoothed median, certified widths.

:func:`smoothed_records` can keep each image's samples in a cache folder, so that a
long evaluation killed half-way resumes where it stopped."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import kornia
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import metrics
from ..loading import read_checkpoint
from ..models.spec import LoadedModel
from ..smoothing import SmoothedIQA, certify_samples
from .training import TrainImage

__all__ = ["fingerprint", "smoothed_records", "summarise", "median_agreement", "oracle_records"]


def fingerprint(module: nn.Module | None) -> str:
    """A SHA-256 hex digest of a module's class and state dict ('none' for None): two modules
    with the same digest compute the same function. A :class:`~certiqa.models.LoadedModel` is
    fingerprinted as the module it wraps; a plain callable raises TypeError."""
    if module is None:
        return "none"
    while isinstance(module, LoadedModel):
        module = module.model
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"cannot fingerprint a {type(module).__name__}: a cache needs an nn.Module (its weights tell "
            "models apart). Wrap the callable in an nn.Module, or run without a cache folder."
        )
    digest = hashlib.sha256(type(module).__qualname__.encode())
    for key, tensor in module.state_dict().items():
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode() + str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _cache_file(folder: Path, name: str) -> Path:
    """One file per image name (readable tail + a hash, so distinct names never collide)."""
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[-60:]
    return folder / f"{tail}-{hashlib.sha256(name.encode()).hexdigest()[:12]}.pt"


def _open_cache(folder: Path, settings: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "settings.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != settings:
            raise ValueError(
                f"the cache {folder} was written with other settings; use another folder or delete it.\n"
                f"cache: {saved}\nnow:   {settings}"
            )
    else:
        path.write_text(json.dumps(settings, indent=1))


def smoothed_records(
    model: nn.Module,
    images: Sequence[TrainImage],
    sigma: float,
    n: int,
    alpha: float,
    eps: Sequence[float],
    *,
    denoiser: nn.Module | None = None,
    reference: nn.Module | None = None,
    seed: int = 0,
    batch_size: int = 32,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    desc: str = "smoothing",
) -> list[dict[str, Any]]:
    """One row per image: name, score (as given), clean base score, smoothed median and, for
    each eps, the certified width (upper - lower; inf where not certifiable), all from one
    set of ``n`` sorted samples per image (the same order statistics as
    :meth:`SmoothedIQA.certify`). ``reference``: the model whose score of the clean image is
    the row's ``clean`` (default ``model``), e.g. the teacher of a fine-tuned student.

    With ``cache_dir``, each image's clean score and sorted samples are written there
    (atomically, one file per image name) once drawn and read back on the next call, so a
    killed run resumes and runs on overlapping image lists share work. The folder
    remembers sigma, n, seed, batch size (the noise depends on it) and the fingerprints
    of model and denoiser; other settings are refused, and so is an image whose shape
    differs from the cached one under its name (e.g. another resize)."""
    smoothed = SmoothedIQA(model, sigma, n=n, alpha=alpha, batch_size=batch_size, denoiser=denoiser, seed=seed)
    device = smoothed.device_for(images[0].image) if images else torch.device("cpu")
    folder = Path(cache_dir) if cache_dir is not None else None
    if folder is not None:
        settings = {"sigma": float(sigma), "n": n, "seed": seed, "batch_size": batch_size,
                    "model": fingerprint(model), "denoiser": fingerprint(denoiser)}
        if reference is not None:
            settings["reference"] = fingerprint(reference)
        _open_cache(folder, settings)
    scorer = (model if reference is None else reference).eval()
    rows = []
    for im in tqdm(images, desc=desc, disable=not progress, dynamic_ncols=True):
        path = _cache_file(folder, im.name) if folder is not None else None
        if path is not None and path.exists():
            saved = read_checkpoint(path, "an evaluation cache file")
            if saved["name"] != im.name or tuple(saved["shape"]) != tuple(im.image.shape):
                raise ValueError(f"{path} holds image {saved['name']!r} of shape {tuple(saved['shape'])}, expected "
                                 f"{im.name!r} of shape {tuple(im.image.shape)}; use another cache folder.")
            samples, clean = saved["samples"][None], float(saved["clean"])
        else:
            x = im.image.unsqueeze(0)
            samples = smoothed.sample(x).cpu()
            with torch.no_grad():
                clean = float(scorer(x.to(device)).reshape(()))
            if path is not None:
                tmp = path.with_name(path.name + ".tmp")
                torch.save({"name": im.name, "shape": list(im.image.shape), "clean": clean, "samples": samples[0].clone()}, tmp)
                os.replace(tmp, path)
        certs = [certify_samples(samples, e, sigma, alpha) for e in eps]
        row = {"name": im.name, "score": im.score, "clean": clean, "median": float(certs[0].median[0])}
        for e, cert in zip(eps, certs):
            row[f"width_{e:g}"] = float(cert.width[0])  # inf where not certifiable
        rows.append(row)
    return rows


def _defined(metric: Callable[..., float], pred: Sequence[float], target: Sequence[float], **kwargs: Any) -> float:
    """The metric, or NaN where it is undefined (fewer than 3 pairs, a constant series)."""
    try:
        return metric(pred, target, **kwargs)
    except ValueError:
        return math.nan


def summarise(
    rows: Sequence[dict[str, Any]],
    eps: Sequence[float],
    *,
    lower_better: bool,
    ladder_of: Mapping[str, str] | None = None,
    human: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Summary of :func:`smoothed_records` rows.

    - ``srocc`` / ``plcc`` (logistic5) / ``plcc_raw`` (no mapping: also measures whether
      the level and scale are kept) / ``krocc`` of the medians against the clean base
      scores, and ``shift``, the mean |median - clean| (score units);
    - with ``ladder_of`` (image name -> ladder id): ``ladder_srocc``, the mean within-ladder
      SROCC against the rows' ``score`` (e.g. SSIM), over ``ladders`` ladders;
    - with ``human`` (image name -> human score, higher = better): ``srocc_human`` /
      ``plcc_human`` (no mapping) over the ``human_images`` rows that have one;
    - per eps: ``width_<eps>``, the mean certified width over certified images (inf if
      none), and ``certified_<eps>``, the certified fraction.

    Medians are negated when ``lower_better`` before they meet ladder or human scores
    (+1 means the right order). Correlations are NaN where undefined."""
    med = [r["median"] for r in rows]
    clean = [r["clean"] for r in rows]
    out: dict[str, Any] = {
        "images": len(rows),
        "srocc": _defined(metrics.srocc, med, clean),
        "plcc": _defined(metrics.plcc, med, clean),
        "plcc_raw": _defined(metrics.plcc, med, clean, mapping="none"),
        "krocc": _defined(metrics.krocc, med, clean),
        "shift": sum(abs(m - c) for m, c in zip(med, clean)) / len(rows) if rows else math.nan,
    }
    sign = -1.0 if lower_better else 1.0
    if ladder_of is not None:
        lad = [r for r in rows if r["name"] in ladder_of and r["score"] is not None]
        out["ladder_srocc"], out["ladders"] = metrics.grouped_srocc(
            [sign * r["median"] for r in lad], [r["score"] for r in lad], [ladder_of[r["name"]] for r in lad]
        )
    if human is not None:
        scored = [r for r in rows if r["name"] in human]
        pred, truth = [sign * r["median"] for r in scored], [human[r["name"]] for r in scored]
        out["srocc_human"] = _defined(metrics.srocc, pred, truth)
        out["plcc_human"] = _defined(metrics.plcc, pred, truth, mapping="none")
        out["human_images"] = len(scored)
    for e in eps:
        widths = [r[f"width_{e:g}"] for r in rows]
        finite = [w for w in widths if math.isfinite(w)]
        out[f"width_{e:g}"] = sum(finite) / len(finite) if finite else math.inf
        out[f"certified_{e:g}"] = len(finite) / len(widths) if widths else math.nan
    return out


def median_agreement(rows: Sequence[dict[str, Any]], reference: Sequence[dict[str, Any]]) -> dict[str, float]:
    """How the medians of ``rows`` (e.g. n 16 per image) agree with those of ``reference``
    (e.g. n 1000) on the images of ``reference`` (matched by name; each must be in ``rows``).

    Returns ``images``; ``srocc_between``, the SROCC between the two sets of medians;
    ``mean_abs_difference`` and ``max_abs_difference`` (score units); ``srocc`` and
    ``srocc_reference``, each set's SROCC against the clean scores. Correlations are NaN
    where undefined. Whether a small n is enough for the correlation columns: if the two
    sets rank the images alike, more samples would not change those columns much."""
    median_of = {r["name"]: r["median"] for r in rows}
    missing = [r["name"] for r in reference if r["name"] not in median_of]
    if missing:
        raise ValueError(f"every reference image must have a row; missing {missing[:3]} ({len(missing)} in all).")
    small = [median_of[r["name"]] for r in reference]
    large = [r["median"] for r in reference]
    clean = [r["clean"] for r in reference]
    differences = [abs(a - b) for a, b in zip(small, large)]
    return {
        "images": len(reference),
        "srocc_between": _defined(metrics.srocc, small, large),
        "mean_abs_difference": sum(differences) / len(differences) if differences else math.nan,
        "max_abs_difference": max(differences, default=math.nan),
        "srocc": _defined(metrics.srocc, small, clean),
        "srocc_reference": _defined(metrics.srocc, large, clean),
    }


def oracle_records(
    model: nn.Module,
    images: Sequence[TrainImage],
    residual_stds: Sequence[float],
    blur_sigmas: Sequence[float],
    *,
    n: int = 8,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """What the model scores if a denoiser's output were the clean image x plus a small
    error: an upper bound on what denoising can keep, that needs no denoiser.

    One row per image: ``name``, ``clean`` = f(x), for each r in ``residual_stds``
    ``noise_<r>`` = the median of f(clip(x + r G)) over ``n`` draws (white Gaussian residual
    noise of std r, :meth:`SmoothedIQA.predict` with sigma r and ``seed``), and for each b in
    ``blur_sigmas`` ``blur_<b>`` = f(gaussian_blur(x, b)) (the smoothing that denoisers leave;
    kernel 2 ceil(3b) + 1, reflected borders). A denoiser whose output is further from x than
    these cannot be expected to rank images better than the column it resembles."""
    for name, values in (("residual_stds", residual_stds), ("blur_sigmas", blur_sigmas)):
        if any(not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0) for v in values):
            raise ValueError(f"{name} must be positive finite numbers, got {list(values)!r}.")
    if not residual_stds and not blur_sigmas:
        raise ValueError("give at least one residual std or blur sigma.")
    model = model.eval()
    smoothers = {r: SmoothedIQA(model, r, n=n, batch_size=batch_size, seed=seed) for r in residual_stds}
    rows = []
    for im in tqdm(images, desc="oracle", disable=not progress, dynamic_ncols=True):
        x = im.image.unsqueeze(0)
        row: dict[str, Any] = {"name": im.name}
        for r, smoothed in smoothers.items():
            row[f"noise_{r:g}"] = float(smoothed.predict(x)[0])
        with torch.no_grad():
            row["clean"] = float(model(x).reshape(()))
            for b in blur_sigmas:
                k = 2 * math.ceil(3 * b) + 1
                blurred = kornia.filters.gaussian_blur2d(x, (k, k), (float(b), float(b)), border_type="reflect")
                row[f"blur_{b:g}"] = float(model(blurred).reshape(()))
        rows.append({"name": im.name, "clean": row.pop("clean"), **{k: v for k, v in row.items() if k != "name"}})
    return rows
