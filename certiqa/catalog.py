"""What models and denoisers there are: ``certiqa models`` (in the spirit of ``pyiqa -ls``).

Nothing is built or downloaded: the shipped models' metadata is constant, the shipped
denoisers' is read from their files (no unpickling), and pyiqa's no-reference metrics
come from its configuration table (``pyiqa.default_model_configs.DEFAULT_CONFIGS``:
``metric_mode``, ``lower_better``, ``score_range``), the same that ``pyiqa -ls`` reads.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from typing import Any

from .denoisers import PRETRAINED_SIGMAS, pretrained_path, read_denoiser_meta
from .models.cnniqa import CNNIQA
from .models.default import DEFAULT_CONFIG
from .models.spec import _parse_range_text

__all__ = ["builtin_models", "shipped_denoisers", "pyiqa_metrics", "format_catalog"]


def builtin_models() -> list[dict[str, Any]]:
    """The model specs that need nothing but certiqa: ``spec``, ``lower_better``,
    ``score_range`` and a one-line ``about``."""
    cnniqa = inspect.signature(CNNIQA).parameters  # what cnniqa:FILE states: CNNIQA's defaults
    return [
        {"spec": "default", "lower_better": DEFAULT_CONFIG["lower_better"],
         "score_range": tuple(DEFAULT_CONFIG["score_range"]),
         "about": "certiqa's embedded CNNIQA (50 kernels, 800 hidden; 100 x SSIM on synthetic distortions)"},
        {"spec": "cnniqa:FILE", "lower_better": cnniqa["lower_better"].default,
         "score_range": tuple(cnniqa["score_range"].default),
         "about": "a CNNIQA state dict (kernels and hidden width read from the file; LIVE DMOS scale)"},
    ]


def shipped_denoisers() -> list[dict[str, Any]]:
    """The denoisers shipped with certiqa (``--denoiser pretrained``): ``sigma``, the model
    they were trained for (``base_model``), ``arch``, training ``steps`` and ``file``."""
    rows = []
    for sigma in PRETRAINED_SIGMAS:
        path = pretrained_path(sigma)
        if not path.is_file():
            continue
        meta = read_denoiser_meta(path)
        rows.append({"sigma": sigma, "base_model": meta.get("base_model"), "arch": meta.get("arch"),
                     "steps": meta.get("steps"), "file": path.name})
    return rows


def pyiqa_metrics() -> list[dict[str, Any]] | None:
    """pyiqa's no-reference metrics, sorted by name: ``spec`` (``pyiqa:NAME``),
    ``lower_better`` and ``score_range`` ((lo, hi), None where pyiqa leaves an end open,
    ``score_range_text`` as pyiqa states it, '~' meaning approximate); None when pyiqa
    is not installed."""
    if importlib.util.find_spec("pyiqa") is None:
        return None
    configs = importlib.import_module("pyiqa.default_model_configs").DEFAULT_CONFIGS
    rows = []
    for name in sorted(configs):
        config = configs[name]
        if config.get("metric_mode") != "NR":
            continue
        text = config.get("score_range")
        rows.append({"spec": f"pyiqa:{name}", "lower_better": bool(config.get("lower_better", False)),
                     "score_range": _parse_range_text(text), "score_range_text": text})
    return rows


def _direction(lower_better: bool | None) -> str:
    return {True: "lower is better", False: "higher is better", None: "unknown"}[lower_better]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]


def format_catalog() -> str:
    """The text of ``certiqa models``: built-in models, shipped denoisers, pyiqa's NR metrics."""
    lines = ["Built-in models (--model SPEC):"]
    lines += ["  " + line for line in _table(
        ["spec", "direction", "range", "about"],
        [[m["spec"], _direction(m["lower_better"]), f"{m['score_range'][0]:g}-{m['score_range'][1]:g}", m["about"]]
         for m in builtin_models()])]
    lines += ["", "Shipped denoisers (--denoiser pretrained, at --sigma):"]
    denoisers = shipped_denoisers()
    lines += ["  " + line for line in _table(
        ["sigma", "trained for", "arch", "steps", "file"],
        [[f"{d['sigma']:g}", f"--model {d['base_model']}", str(d["arch"]), str(d["steps"]), d["file"]]
         for d in denoisers])] if denoisers else ["  none installed"]
    metrics = pyiqa_metrics()
    lines += [""]
    if metrics is None:
        lines += ["pyiqa's no-reference metrics: pyiqa is not installed (pip install pyiqa)."]
    else:
        lines += [f"pyiqa's no-reference metrics ({len(metrics)}; --model pyiqa:NAME or pyiqa:NAME(name=value, ...), "
                  "range as pyiqa states it, ~ approximate):"]
        lines += ["  " + line for line in _table(
            ["spec", "direction", "range"],
            [[m["spec"], _direction(m["lower_better"]), str(m["score_range_text"] or "unknown")] for m in metrics])]
    return "\n".join(lines)
