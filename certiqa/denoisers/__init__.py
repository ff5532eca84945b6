"""Denoisers placed in front of an NR-IQA model inside randomized smoothing.

``SmoothedIQA(model, sigma, denoiser=D)`` smooths ``f(D(clip(x + G)))``; because D
is part of the smoothed function, the certificates stay valid whatever D is.

Files written by :func:`save_denoiser` hold the architecture name, its config, the
state dict and free metadata (sigma, base model, losses ...), and load with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import filecmp
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..loading import read_checkpoint
from ..models.cnniqa import check_state_dict
from .nets import ARCHITECTURES, DnCNN, SubpixelDnCNN, UNet

__all__ = ["DnCNN", "UNet", "SubpixelDnCNN", "save_denoiser", "load_denoiser", "read_denoiser_meta", "pretrained",
           "PRETRAINED_SIGMAS", "DenoiserMismatchWarning", "denoiser_mismatch"]

FORMAT = "certiqa-denoiser-v1"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
PRETRAINED_SIGMAS = (0.06, 0.12, 0.25)


def _arch_name(model: nn.Module) -> str:
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise TypeError(
        f"save_denoiser saves {', '.join(c.__name__ for c in ARCHITECTURES.values())} models, got "
        f"{type(model).__name__}; save other modules with torch.save(model.state_dict(), path)."
    )


def save_denoiser(model: nn.Module, path: str | os.PathLike, **meta: Any) -> Path:
    """Write ``model`` (an architecture of :data:`ARCHITECTURES`) with its config and ``meta`` (plain Python values:
    str, int, float, bool, None, lists/tuples/dicts of those) to ``path``, atomically."""
    record = {
        "format": FORMAT,
        "arch": _arch_name(model),
        "config": dict(model.config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": dict(meta),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(record, tmp)
    os.replace(tmp, path)
    return path


def _read_record(path: str | os.PathLike) -> dict[str, Any]:
    record = read_checkpoint(path, "a denoiser", expected="a denoiser file written by certiqa.denoisers.save_denoiser",
                             pickle_hint="write denoiser files with certiqa.denoisers.save_denoiser")
    where = os.fspath(path)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        got = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise ValueError(
            f"{where!r} is not a certiqa denoiser file (format {got!r}, expected {FORMAT!r}). "
            "Write denoiser files with certiqa.denoisers.save_denoiser."
        )
    if record.get("arch") not in ARCHITECTURES:
        raise ValueError(f"{where!r}: unknown denoiser architecture {record.get('arch')!r}; known: {sorted(ARCHITECTURES)}.")
    if not isinstance(record.get("config"), dict) or not isinstance(record.get("meta"), dict):
        raise ValueError(f"{where!r}: the denoiser file lacks its 'config' or 'meta' dict; it is damaged.")
    return record


def load_denoiser(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """Load a file written by :func:`save_denoiser` (``weights_only=True``) as a module in eval mode.

    The file's metadata is at ``model.meta``. Raises FileNotFoundError for a missing
    file and ValueError for anything that is not a valid denoiser file."""
    record = _read_record(path)
    try:
        model = ARCHITECTURES[record["arch"]](**record["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{os.fspath(path)!r}: invalid {record['arch']} config {record['config']!r} ({err}).") from None
    expected = {k: v.shape for k, v in model.state_dict().items()}
    state = check_state_dict(record["state_dict"], expected, os.fspath(path), f"{record['arch']} denoiser")
    model.load_state_dict(state)
    model.meta = dict(record["meta"])
    return model.to(device).eval()


def read_denoiser_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata dict of a denoiser file (architecture and config included)."""
    record = _read_record(path)
    return {"arch": record["arch"], "config": record["config"], **record["meta"]}


class DenoiserMismatchWarning(UserWarning):
    """A denoiser used at a sigma outside the range its file records, or in front of another
    model than its ``base_model``: the certificates stay valid (the denoiser is part of the
    smoothed function), but they are likely wider than with a matching denoiser."""


def _same_model(recorded: str, spec: str) -> bool:
    """Whether two model specs name the same model: equal specs, or specs of one kind
    (``cnniqa:FILE`` or ``FILE``) whose files have the same bytes."""
    if recorded == spec:
        return True
    prefix = "cnniqa:"
    if recorded.startswith(prefix) != spec.startswith(prefix):
        return False
    a, b = recorded.removeprefix(prefix), spec.removeprefix(prefix)
    return os.path.isfile(a) and os.path.isfile(b) and filecmp.cmp(a, b, shallow=False)


def denoiser_mismatch(denoiser: Any, sigma: float, model_spec: str | None = None) -> str | None:
    """A one-line reason when ``denoiser`` (its ``meta`` as :func:`load_denoiser` sets it) was
    trained for another sigma than ``sigma`` (outside its recorded ``sigma``, a value or a
    [min, max] range, by more than 1e-6 relative) or for another model than ``model_spec``
    (its recorded ``base_model``); None when it matches or the file records neither."""
    meta = getattr(denoiser, "meta", None)
    if not isinstance(meta, dict):
        return None
    problems = []
    recorded = meta.get("sigma")
    try:
        lo, hi = (float(recorded), float(recorded)) if isinstance(recorded, (int, float)) else map(float, recorded)
    except (TypeError, ValueError):
        lo = hi = None
    if lo is not None and not lo * (1 - 1e-6) <= sigma <= hi * (1 + 1e-6):
        trained = f"sigma {lo:g}" if lo == hi else f"sigma in [{lo:g}, {hi:g}]"
        problems.append(f"was trained at {trained}, used at sigma {sigma:g}")
    base = meta.get("base_model")
    if isinstance(base, str) and model_spec is not None and not _same_model(base, model_spec):
        problems.append(f"was trained for model {base!r}, used with {model_spec!r}")
    if not problems:
        return None
    return (f"the denoiser {' and '.join(problems)}; the certificates stay valid, but a denoiser trained for this "
            "sigma and model (denoisers/train.py) likely gives narrower ones.")


def pretrained_path(sigma: float) -> Path:
    """Path of the shipped denoiser for the default model at ``sigma`` (0.06, 0.12 or 0.25)."""
    matches = [s for s in PRETRAINED_SIGMAS if abs(float(sigma) - s) < 1e-9]
    if not matches:
        raise ValueError(
            f"no pretrained denoiser for sigma={sigma}; shipped: {list(PRETRAINED_SIGMAS)}. "
            "Train one for your sigma with denoisers/train.py."
        )
    return WEIGHTS_DIR / f"denoiser_dncnn_s{round(matches[0] * 100):03d}.pt"


def pretrained(sigma: float, *, device: str | torch.device = "cpu") -> nn.Module:
    """The shipped denoiser for certiqa's default model at ``sigma`` (a SubpixelDnCNN trained with
    MSE, then MSE + ranking + score fidelity; see ``denoisers/train.py``)."""
    path = pretrained_path(sigma)
    if not path.is_file():
        raise FileNotFoundError(
            f"the pretrained denoiser for sigma={sigma} is not installed ({path} is missing); "
            "reinstall certiqa or train one with denoisers/train.py."
        )
    return load_denoiser(path, device=device)
