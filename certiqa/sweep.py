"""Choosing sigma: fidelity and certified width of the smoothed model over a grid of noise levels.

For each sigma, plain median smoothing, (where a denoiser is given for that sigma)
denoised smoothing and (where a fine-tuned student is given for it) the smoothed student,
compared with the original model's clean scores, are run on the same images with the same noise seed; each gives
one row of :func:`certiqa.denoisers.evaluation.summarise`: SROCC / PLCC / KROCC of the
smoothed median against the clean base scores, the mean |median - clean| shift,
SROCC / PLCC against human scores where given, and the mean certified width (and
certified fraction) at each eps. A larger sigma certifies larger radii but moves the
smoothed median further from the clean score; the table shows by how much.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from torch import nn

from ._checks import check_positive
from .denoisers.evaluation import smoothed_records, summarise
from .denoisers.training import TrainImage

__all__ = ["SWEEP_SIGMAS", "sweep_sigma", "read_human_scores", "format_sweep", "plot_sweep"]

SWEEP_SIGMAS = (0.03, 0.06, 0.12, 0.25)


def sweep_sigma(
    model: nn.Module,
    images: Sequence[TrainImage],
    sigmas: Sequence[float] = SWEEP_SIGMAS,
    *,
    denoisers: Mapping[float, nn.Module] | None = None,
    students: Mapping[float, nn.Module] | None = None,
    human: Mapping[str, float] | None = None,
    n: int = 100,
    alpha: float = 0.001,
    eps: Sequence[float] = (0.02, 0.05, 0.1),
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One summary row per (sigma, plain / denoised / student): ``sigma``, ``denoiser``
    ('none', 'yes' or 'student'), then the keys of :func:`summarise` (correlations NaN
    where fewer than 3 images, or a constant series, make them undefined).

    ``denoisers`` maps a sigma of ``sigmas`` to the denoiser trained for it; ``students``
    maps a sigma to a student of ``model`` fine-tuned for it (:mod:`certiqa.training`),
    smoothed in place of ``model`` and compared with ``model``'s clean scores; ``human``
    maps image names to human scores oriented so that higher is better (the medians
    are negated for a ``lower_better`` model before they are compared)."""
    if not images:
        raise ValueError("sweep_sigma needs at least one image, got none.")
    sigmas = [check_positive("sigma", s) for s in sigmas]
    if not sigmas:
        raise ValueError("sweep_sigma needs at least one sigma, got none.")
    denoisers, students = dict(denoisers or {}), dict(students or {})
    for what, given in (("denoisers", denoisers), ("students", students)):
        unknown = [s for s in given if not any(math.isclose(s, t) for t in sigmas)]
        if unknown:
            raise ValueError(f"{what} given for sigma {unknown}, which the sweep does not run ({sigmas}); "
                             f"add those sigmas or drop the {what}.")
    lower_better = bool(getattr(model, "lower_better", False))
    table = []
    for sigma in sigmas:
        configs: list[tuple[str, nn.Module | None, nn.Module | None]] = [("none", None, None)]
        configs += [("yes", d, None) for s, d in denoisers.items() if math.isclose(s, sigma)]
        configs += [("student", None, m) for s, m in students.items() if math.isclose(s, sigma)]
        for name, denoiser, student in configs:
            rows = smoothed_records(model if student is None else student, images, sigma, n, alpha, eps,
                                    denoiser=denoiser, reference=None if student is None else model, seed=seed,
                                    batch_size=batch_size, progress=progress, desc=f"sigma {sigma:g} denoiser {name}")
            table.append({"sigma": sigma, "denoiser": name,
                          **summarise(rows, eps, human=human, lower_better=lower_better)})
    return table


def read_human_scores(manifest: str | os.PathLike, include: Sequence[str] = ()) -> dict[str, float]:
    """Human scores of a manifest CSV (``file`` and ``score`` columns), keyed by ``file``.

    Only rows with a score whose ``file`` contains one of ``include`` (all when empty).
    Where the row gives ``scale_min``, ``scale_max`` and ``higher_is_better`` (as
    ../shared/data's manifest does), the score is mapped to a goodness in [0, 1]
    (flipped when lower is better), so that datasets on different scales pool;
    otherwise it is taken as is, higher = better."""
    path = Path(manifest)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and "file" not in rows[0]:
        raise ValueError(f"{path}: a manifest needs a 'file' column, got columns {list(rows[0])}.")
    out = {}
    for r in rows:
        text = (r.get("score") or "").strip()
        if not text or (include and not any(s in r["file"] for s in include)):
            continue
        score = float(text)
        lo, hi, better = (r.get(k, "").strip() for k in ("scale_min", "scale_max", "higher_is_better"))
        if lo and hi and better:
            score = (score - float(lo)) / (float(hi) - float(lo))
            score = score if better == "1" else 1.0 - score
        out[r["file"]] = score
    return out


def format_sweep(table: Sequence[Mapping[str, Any]], eps: Sequence[float]) -> str:
    """A markdown table of :func:`sweep_sigma` rows (widths in score units; the certified
    percentage is shown where not every image is certified)."""
    human = any(r.get("human_images") for r in table)
    head = ["sigma", "denoiser", "SROCC vs clean", "PLCC vs clean", "mean |shift|"]
    head += ["SROCC vs human", "PLCC vs human"] if human else []
    head += [f"width eps {e:g}" for e in eps]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        cells = [f"{r['sigma']:g}", r["denoiser"], f"{r['srocc']:.3f}", f"{r['plcc']:.3f}", f"{r['shift']:.3f}"]
        cells += [f"{r['srocc_human']:.3f}", f"{r['plcc_human']:.3f}"] if human else []
        for e in eps:
            frac = r[f"certified_{e:g}"]
            cells.append(f"{r[f'width_{e:g}']:.3f}" + ("" if frac == 1 else f" ({100 * frac:.0f}% cert.)"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_sweep(table: Sequence[Mapping[str, Any]], eps: Sequence[float], path: str | os.PathLike) -> Path:
    """Plot SROCC against the clean scores and the mean certified widths over sigma, plain,
    denoised and student, to ``path`` (any format matplotlib writes); widths that are not finite
    (nothing certified) are left out. Needs matplotlib."""
    try:
        import matplotlib
        import matplotlib.ticker

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plotting the sweep needs matplotlib: pip install matplotlib (or drop --plot).") from None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name, style in (("none", "-o"), ("yes", "--s"), ("student", ":^")):
        rows = [r for r in table if r["denoiser"] == name]
        if not rows:
            continue
        label = {"none": "plain", "yes": "denoised", "student": "student"}[name]
        left.plot([r["sigma"] for r in rows], [r["srocc"] for r in rows], style, label=label)
        for e in eps:
            right.plot([r["sigma"] for r in rows], [r[f"width_{e:g}"] for r in rows], style, label=f"{label}, eps {e:g}")
    left.set(xscale="log", xlabel="sigma", ylabel="SROCC of the smoothed median vs clean", title="fidelity")
    right.set(xscale="log", yscale="log", xlabel="sigma", ylabel="mean certified width (score units)",
              title="certified width")
    sigmas = sorted({r["sigma"] for r in table})
    for ax in (left, right):
        ax.set_xticks(sigmas, [f"{s:g}" for s in sigmas])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    left.legend()
    right.legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
