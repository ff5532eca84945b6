"""Evaluate NR-IQA models on the real images of a shared data folder.

The folder layout is the one of ``../shared/data`` (see its README): a
``manifest.csv`` with columns ``file, dataset, score, scale_min, scale_max,
higher_is_better, ...``, labelled images with human scores in ``images/labelled``
and LIVE distortion ladders in ``images/ladders`` scored by SSIM to their reference.

Two measurements:

* ``labelled``: every human score is oriented and normalised to a *goodness* in
  [0, 1] (``(score - min) / (max - min)``, flipped when lower is better, e.g.
  LIVE DMOS), then SROCC and PLCC (no logistic mapping: too few points) between
  the model's goodness and it, pooled over all datasets. Scales of different
  datasets are not strictly comparable, and there are few images: indicative only.
* ``ladders``: for each (reference, distortion) group of a LIVE ladder, the SROCC
  and PLCC between the model's goodness and the SSIM to the reference; reported as
  the mean over groups (and per distortion).

A model's goodness is its score, negated when lower is better (``model.lower_better``
unless given). The model may be any callable from (1, 3, H, W) images in [0, 1] to a
score, e.g. a :class:`certiqa.SmoothedIQA` (its smoothed median).
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .io import load_image
from .metrics import plcc, srocc

__all__ = [
    "ManifestRow", "read_manifest", "evenly_spaced", "goodness_scores", "EvaluationResult", "evaluate_model",
    "markdown_table",
]

_LADDER = re.compile(r"live_(?P<distortion>[a-z0-9]+)_(?P<reference>[a-z0-9]+)_(?P<step>\d+)\.\w+$")


@dataclass(frozen=True)
class ManifestRow:
    """One row of ``manifest.csv``; ``score`` and its scale are None for unscored files."""

    file: str
    dataset: str
    score: float | None
    scale_min: float | None
    scale_max: float | None
    higher_is_better: bool | None

    @property
    def goodness(self) -> float | None:
        """The score mapped to [0, 1] on its own scale, higher = better (None if unscored)."""
        if self.score is None or self.scale_min is None or self.scale_max is None:
            return None
        value = (self.score - self.scale_min) / (self.scale_max - self.scale_min)
        return value if self.higher_is_better else 1.0 - value


def read_manifest(data_dir: str | os.PathLike, *, scored_only: bool = True) -> list[ManifestRow]:
    """Rows of ``data_dir/manifest.csv``, in file order; with ``scored_only`` (the default)
    only those that carry a score (references and weights are skipped)."""
    path = Path(data_dir) / "manifest.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no manifest.csv in {data_dir}; pass the shared data folder (../shared/data).")

    def number(text: str) -> float | None:
        return float(text) if text.strip() else None

    rows = []
    with path.open(newline="") as handle:
        for rec in csv.DictReader(handle):
            scored = bool(rec["score"].strip() and rec["higher_is_better"].strip())
            if scored_only and not scored:
                continue
            rows.append(
                ManifestRow(
                    file=rec["file"],
                    dataset=rec["dataset"],
                    score=number(rec["score"]) if scored else None,
                    scale_min=number(rec["scale_min"]),
                    scale_max=number(rec["scale_max"]),
                    higher_is_better=rec["higher_is_better"].strip() == "1" if scored else None,
                )
            )
    return rows


def evenly_spaced(count: int, k: int | None) -> list[int]:
    """k indices evenly spaced over range(count), first and last included (all when k is None or
    >= count): ``evenly_spaced(8, 3) == [0, 4, 7]``."""
    if k is None or k >= count:
        return list(range(count))
    if k < 1:
        raise ValueError(f"k must be >= 1 (or None for all), got {k}.")
    if k == 1:
        return [0]
    return sorted({round(i * (count - 1) / (k - 1)) for i in range(k)})


def _lower_better(model: nn.Module | Callable[[torch.Tensor], torch.Tensor], lower_better: bool | None) -> bool:
    return bool(getattr(model, "lower_better", False)) if lower_better is None else lower_better


@torch.no_grad()
def goodness_scores(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    paths: Sequence[str | os.PathLike],
    *,
    lower_better: bool | None = None,
    progress: bool = False,
    desc: str = "scoring",
) -> np.ndarray:
    """Score each image file (one at a time, full resolution) and orient so that higher = better.

    An ``nn.Module`` runs in eval mode on the device of its first parameter; any other
    callable gets CPU tensors. ``lower_better`` defaults to ``model.lower_better`` (False
    when absent)."""
    sign = -1.0 if _lower_better(model, lower_better) else 1.0
    device = torch.device("cpu")
    if isinstance(model, nn.Module):
        model.eval()
        device = next(model.parameters()).device
    out = []
    for path in tqdm(paths, desc=desc, disable=not progress):
        x = load_image(path).unsqueeze(0).to(device)
        out.append(sign * float(model(x)))
    return np.asarray(out, dtype=np.float64)


@dataclass
class EvaluationResult:
    """Correlations of one model; ``ladder_by_distortion`` maps a distortion to its mean group SROCC;
    ``ladder_goodness`` holds the model's goodness of every ladder image, in manifest order."""

    labelled_srocc: float
    labelled_plcc: float
    labelled_n: int
    ladder_srocc: float
    ladder_plcc: float
    ladder_groups: int
    ladder_by_distortion: dict[str, float]
    ladder_goodness: tuple[float, ...] = ()


def evaluate_model(
    model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    data_dir: str | os.PathLike,
    *,
    lower_better: bool | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """Labelled-image and ladder correlations of ``model`` on the data folder (see the module doc)."""
    data_dir = Path(data_dir)
    rows = read_manifest(data_dir)
    labelled = [r for r in rows if r.file.startswith("images/labelled/")]
    ladders = [r for r in rows if r.file.startswith("images/ladders/")]
    if len(labelled) < 3 or not ladders:
        raise ValueError(f"{data_dir}/manifest.csv has {len(labelled)} labelled and {len(ladders)} ladder images; "
                         "need >= 3 and >= 1.")
    truth = np.array([r.goodness for r in labelled])
    lower_better = _lower_better(model, lower_better)
    pred = goodness_scores(model, [data_dir / r.file for r in labelled], lower_better=lower_better, progress=progress,
                           desc="labelled")
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, r in enumerate(ladders):
        match = _LADDER.search(r.file)
        if match is None:
            raise ValueError(f"ladder file name {r.file!r} is not live_<distortion>_<reference>_<step>.<ext>.")
        groups[(match["distortion"], match["reference"])].append(i)
    ladder_pred = goodness_scores(model, [data_dir / r.file for r in ladders], lower_better=lower_better,
                                  progress=progress, desc="ladders")
    ssim = np.array([r.score for r in ladders])
    per_group_s, per_group_p = {}, {}
    for key, idx in sorted(groups.items()):
        if len(idx) >= 3:
            per_group_s[key] = srocc(ladder_pred[idx], ssim[idx])
            per_group_p[key] = plcc(ladder_pred[idx], ssim[idx], mapping="none")
    by_distortion: dict[str, list[float]] = defaultdict(list)
    for (distortion, _), value in per_group_s.items():
        by_distortion[distortion].append(value)
    return EvaluationResult(
        labelled_srocc=srocc(pred, truth),
        labelled_plcc=plcc(pred, truth, mapping="none"),
        labelled_n=len(labelled),
        ladder_srocc=float(np.mean(list(per_group_s.values()))),
        ladder_plcc=float(np.mean(list(per_group_p.values()))),
        ladder_groups=len(per_group_s),
        ladder_by_distortion={k: float(np.mean(v)) for k, v in sorted(by_distortion.items())},
        ladder_goodness=tuple(float(v) for v in ladder_pred),
    )


def markdown_table(results: Mapping[str, EvaluationResult]) -> str:
    """A markdown table with one row per model."""
    distortions = sorted({d for r in results.values() for d in r.ladder_by_distortion})
    head = (
        ["model", "labelled SROCC", "labelled PLCC", "ladder SROCC (mean)", "ladder PLCC (mean)"]
        + [f"ladder SROCC {d}" for d in distortions]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        cells = [
            name,
            f"{r.labelled_srocc:.3f} (n={r.labelled_n})",
            f"{r.labelled_plcc:.3f}",
            f"{r.ladder_srocc:.3f} ({r.ladder_groups} groups)",
            f"{r.ladder_plcc:.3f}",
        ] + [f"{r.ladder_by_distortion.get(d, float('nan')):.3f}" for d in distortions]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
