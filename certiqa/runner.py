"""Certify image files and write the results: the engine behind ``certiqa certify``
and the scripts in ``certify/``."""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from tqdm.auto import tqdm

from .io import ImageLoadError, read_image
from ._checks import check_nonnegative
from .bounds import DEFAULT_N0
from .metrics import plcc, srocc
from .smoothing import SmoothedIQA, certify_samples

__all__ = ["CertifyRun", "certify_paths", "check_output_path", "write_results", "format_table", "summarize_by_eps", "RESULT_COLUMNS"]

RESULT_COLUMNS = ("path", "median", "lower", "upper", "width", "certified", "eps", "sigma", "n", "alpha", "seconds")


@dataclass
class CertifyRun:
    """Rows for the images that were certified and one message per image that failed."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def certify_paths(
    smoothed: SmoothedIQA,
    paths: Iterable[str | os.PathLike],
    eps: float | Sequence[float],
    *,
    min_size: int = 1,
    resize: int | tuple[int, int] | None = None,
    progress: bool = True,
    delta: float | None = None,
    n0: int = DEFAULT_N0,
    n_max: int | None = None,
) -> CertifyRun:
    """Certify each image file on its own; a file that fails is reported and skipped.

    One noise sample set per image serves every radius in ``eps`` (one row per
    image and radius). Each row holds the path, the median, the certified
    [lower, upper], the settings and the seconds spent on the image (reading
    included). Errors are ``"PATH: reason"`` lines, in input order.

    With ``delta``, each radius is certified sequentially instead
    (:meth:`SmoothedIQA.certify_sequential` with ``n0`` and ``n_max``, its own samples):
    rows add ``decision``, ``delta``, ``n0`` and ``n_used``, and ``n`` is n_max.
    """
    radii = [check_nonnegative("eps", e) for e in ([eps] if isinstance(eps, (int, float)) else eps)]
    run = CertifyRun()
    paths = list(paths)
    for path in tqdm(paths, desc="certifying", unit="img", disable=not progress):
        start = time.perf_counter()
        try:
            loaded = read_image(path, min_size=min_size, resize=resize)
            image = loaded.image.unsqueeze(0)
            if delta is None:
                samples = smoothed.sample(image)
                records = [certify_samples(samples, r, smoothed.sigma, smoothed.alpha).to_records()[0] for r in radii]
            else:
                records = [smoothed.certify_sequential(image, r, delta, n0=n0, n_max=n_max).to_records()[0]
                           for r in radii]
        except (ImageLoadError, ValueError) as err:
            message = str(err)
            run.errors.append(message if message.startswith(str(path)) else f"{path}: {message}")
            continue
        seconds = round(time.perf_counter() - start, 4)
        for record in records:
            row: dict[str, Any] = {"path": str(path)}
            row.update(record)
            if loaded.resized:
                row["resized_from"] = "x".join(map(str, loaded.original_size))
            row["seconds"] = seconds
            run.rows.append(row)
    return run


def check_output_path(out: str | os.PathLike) -> Path:
    """Refuse an output path whose suffix is not .csv or .json (before any work is done)."""
    out = Path(out)
    if out.suffix.lower() not in (".csv", ".json"):
        raise ValueError(f"--out must end in .csv or .json, got {str(out)!r}.")
    return out


def write_results(rows: list[dict[str, Any]], out: str | os.PathLike) -> None:
    """Write rows as CSV (``.csv``) or JSON (``.json``); other suffixes are refused."""
    out = check_output_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".json":
        out.write_text(json.dumps(rows, indent=2) + "\n")
        return
    columns = list(RESULT_COLUMNS) + sorted({k for row in rows for k in row} - set(RESULT_COLUMNS))
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def summarize_by_eps(rows: list[dict[str, Any]]) -> str:
    """Per radius: images certified, mean certified width, and (where rows have a
    ``score``) SROCC/PLCC of the smoothed median against it."""
    lines = ["| eps | images | certified | mean width | SROCC | PLCC |", "| --- | --- | --- | --- | --- | --- |"]
    for eps in sorted({r["eps"] for r in rows}):
        group = [r for r in rows if r["eps"] == eps]
        widths = [r["width"] for r in group if r["certified"]]
        mean_width = f"{sum(widths) / len(widths):.4f}" if widths else "-"
        corr = ["-", "-"]
        scored = [r for r in group if r.get("score") is not None]
        if len(scored) >= 3:
            try:
                medians, scores = [r["median"] for r in scored], [r["score"] for r in scored]
                corr = [f"{srocc(medians, scores):.4f}", f"{plcc(medians, scores):.4f}"]
            except ValueError:  # constant medians or scores: correlation undefined
                pass
        lines.append(f"| {eps:g} | {len(group)} | {len(widths)} | {mean_width} | {corr[0]} | {corr[1]} |")
    return "\n".join(lines)


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width terminal table: path, eps, median, lower, upper, width, certified."""
    header = ("path", "eps", "median", "lower", "upper", "width", "certified")
    body = [
        (
            str(r["path"]),
            f"{r['eps']:g}",
            f"{r['median']:.4f}",
            f"{r['lower']:.4f}",
            f"{r['upper']:.4f}",
            f"{r['width']:.4f}",
            "yes" if r["certified"] else "no",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
             for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
