"""Comparing smoothed models with and without denoisers: correlation with the clean
base scores, ordinal agreement within ladders of one distortion, certified widths."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import metrics
from ..smoothing import SmoothedIQA, certify_samples
from .training import TrainImage

__all__ = ["smoothed_records", "summarise"]


def smoothed_records(
    model: nn.Module,
    images: Sequence[TrainImage],
    sigma: float,
    n: int,
    alpha: float,
    eps: Sequence[float],
    *,
    denoiser: nn.Module | None = None,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
    desc: str = "smoothing",
) -> list[dict[str, Any]]:
    """One row per image: name, human score, clean base score, smoothed median and, for each
    eps, the certified width (upper - lower; inf where not certifiable), all from one set of
    ``n`` sorted samples per image (the same order statistics as :meth:`SmoothedIQA.certify`)."""
    smoothed = SmoothedIQA(model, sigma, n=n, alpha=alpha, batch_size=batch_size, denoiser=denoiser, seed=seed)
    device = smoothed.device_for(images[0].image) if images else torch.device("cpu")
    rows = []
    for im in tqdm(images, desc=desc, disable=not progress, dynamic_ncols=True):
        x = im.image.unsqueeze(0)
        samples = smoothed.sample(x).cpu()
        with torch.no_grad():
            clean = float(model.eval()(x.to(device)).reshape(()))
        certs = [certify_samples(samples, e, sigma, alpha) for e in eps]
        row = {"name": im.name, "score": im.score, "clean": clean, "median": float(certs[0].median[0])}
        for e, cert in zip(eps, certs):
            row[f"width_{e:g}"] = float(cert.width[0])  # inf where not certifiable
        rows.append(row)
    return rows


def summarise(
    rows: Sequence[dict[str, Any]], eps: Sequence[float], *, ladder_of: dict[str, str], lower_better: bool
) -> dict[str, Any]:
    """SROCC / PLCC (logistic5) / KROCC of the medians against the clean base scores, mean
    within-ladder SROCC against the ladder scores (medians negated when ``lower_better``, so
    +1 means the right order), and per eps the mean certified width over certified images
    and the certified fraction. ``ladder_of`` maps image names to ladder ids."""
    med = [r["median"] for r in rows]
    clean = [r["clean"] for r in rows]
    out: dict[str, Any] = {
        "images": len(rows),
        "srocc": metrics.srocc(med, clean),
        "plcc": metrics.plcc(med, clean),
        "krocc": metrics.krocc(med, clean),
    }
    lad = [r for r in rows if r["name"] in ladder_of and r["score"] is not None]
    sign = -1.0 if lower_better else 1.0
    out["ladder_srocc"], out["ladders"] = metrics.grouped_srocc(
        [sign * r["median"] for r in lad], [r["score"] for r in lad], [ladder_of[r["name"]] for r in lad]
    )
    for e in eps:
        widths = [r[f"width_{e:g}"] for r in rows]
        finite = [w for w in widths if math.isfinite(w)]
        out[f"width_{e:g}"] = sum(finite) / len(finite) if finite else math.inf
        out[f"certified_{e:g}"] = len(finite) / len(widths)
    return out
