"""Command-line options shared by ``certiqa`` and the scripts in certify/, denoisers/ and
benchmarks/: the model spec and its metadata, the denoiser and the device.

    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    args = parser.parse_args()
    model = load_model_from_args(args).to(resolve_device(args.device))

Every function that fails exits with ``PROG: error: REASON`` (one line).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .denoisers import load_denoiser, pretrained, pretrained_path
from .io import file_sha256
from .runner import DEFAULT_MAX_NOISE_BYTES
from .smoothing import PRECISIONS
from .models import MODEL_SPEC_HELP, LoadedModel, load_model

__all__ = [
    "describe_models",
    "add_run_arguments",
    "add_model_arguments",
    "model_spec",
    "load_model_from_args",
    "load_denoiser_from_args",
    "resolve_device",
    "require_metadata",
    "describe_model",
]

_FLAGS = {"lower_better": "--lower-better or --higher-better", "score_range": "--score-range LO HI"}


def _fail(args: argparse.Namespace, message: str) -> SystemExit:
    return SystemExit(f"{getattr(args, 'prog', 'certiqa')}: error: {message}")


def add_model_arguments(parser: argparse.ArgumentParser, *, default: str | None = "default",
                        default_help: str | None = None, denoiser: bool = True) -> None:
    """Add --model SPEC, --weights FILE, --lower-better/--higher-better, --score-range LO HI,
    --min-size N, --denoiser FILE|pretrained (unless ``denoiser=False``) and --device.

    ``default``: the spec used when neither --model nor --weights is given (``None``: the
    script sets ``args.model`` itself after parsing, and ``default_help`` says what it is)."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", metavar="SPEC", default=None,
                       help=f"the NR-IQA model: {MODEL_SPEC_HELP} (default: {default_help or default})")
    group.add_argument("--weights", metavar="FILE", default=None, help="short for --model cnniqa:FILE")
    direction = group.add_mutually_exclusive_group()
    direction.add_argument("--lower-better", dest="lower_better", action="store_const", const=True, default=None,
                           help="lower scores mean better quality (overrides what the model states)")
    direction.add_argument("--higher-better", dest="lower_better", action="store_const", const=False,
                           help="higher scores mean better quality (overrides what the model states)")
    group.add_argument("--score-range", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                       help="nominal range of the model's scores (overrides what the model states)")
    group.add_argument("--min-size", type=int, metavar="N", default=None,
                       help="smallest image side the model accepts (overrides what the model states)")
    if denoiser:
        group.add_argument("--denoiser", metavar="FILE|pretrained",
                           help="denoiser file (certiqa.denoisers.save_denoiser) put before the model inside the "
                                "smoothing; 'pretrained' takes the shipped one for the default model at --sigma")
    group.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="auto: CUDA when available (default)")
    parser.set_defaults(prog=parser.prog.split()[0], model_default=default)


def model_spec(args: argparse.Namespace) -> str:
    """The spec the options name: --weights FILE as ``cnniqa:FILE``, else --model, else the default."""
    if args.weights is not None and args.model is not None:
        raise _fail(args, f"give --model or --weights, not both (got --model {args.model} --weights {args.weights}).")
    if args.weights is not None:
        return f"cnniqa:{args.weights}"
    spec = args.model if args.model is not None else getattr(args, "model_default", None)
    if spec is None:
        raise _fail(args, f"no model given; pass --model SPEC ({MODEL_SPEC_HELP}).")
    return spec


def load_model_from_args(args: argparse.Namespace, *, spec: str | None = None) -> LoadedModel:
    """The model the options name (or ``spec``, e.g. a second model of the same scale), on the
    CPU, with the metadata the options state; a bad spec exits with its reason."""
    score_range = tuple(args.score_range) if args.score_range is not None else None
    try:
        return load_model(model_spec(args) if spec is None else spec, lower_better=args.lower_better,
                          score_range=score_range, min_size=args.min_size)
    except (FileNotFoundError, ValueError) as err:
        raise _fail(args, str(err)) from None


def load_denoiser_from_args(args: argparse.Namespace, *, sigma: float | None = None) -> nn.Module | None:
    """The denoiser named by ``--denoiser`` (None without one); ``pretrained`` takes the shipped
    one at ``sigma`` (default ``args.sigma``). A bad file exits with its reason."""
    if args.denoiser is None:
        return None
    try:
        if args.denoiser == "pretrained":
            if model_spec(args) != "default":
                raise ValueError("--denoiser pretrained was trained for the default model; use --model default "
                                 "or give a denoiser file trained for your model (denoisers/train.py).")
            return pretrained(args.sigma if sigma is None else sigma)
        return load_denoiser(args.denoiser)
    except (FileNotFoundError, ValueError) as err:
        raise _fail(args, str(err)) from None


def resolve_device(name: str) -> torch.device:
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("certiqa: error: --device cuda was asked for but torch.cuda.is_available() is False.")
    return torch.device(name)


def require_metadata(args: argparse.Namespace, model: LoadedModel, *names: str) -> None:
    """Exit with the options to pass when ``model`` does not state ``lower_better`` / ``score_range``."""
    missing = [name for name in names if getattr(model, name) is None]
    if missing:
        raise _fail(args, f"model spec {model.spec!r} does not state its {' or '.join(missing)}, which this "
                          f"command needs; pass {' and '.join(_FLAGS[m] for m in missing)}.")


def describe_model(source: LoadedModel | argparse.Namespace | str) -> dict[str, Any]:
    """Provenance of a model, for result files: ``{"model": spec, "model_sha256": ...,
    "lower_better": ..., "score_range": [lo, hi] or None, "randomized": ...}``, and for a fine-tuned
    student (:mod:`certiqa.training.finetune`) ``model_provenance``, its provenance as JSON (teacher,
    its SHA-256, sigma, recipe, seed: the rows certify the student, a new metric).

    ``model_sha256`` is the SHA-256 of the file the spec names (the embedded weights for
    ``default``), ``None`` for factories and pyiqa metrics; ``randomized`` whether the model
    has randomness of its own (:class:`certiqa.models.LoadedModel`). ``source`` is a loaded model
    (nothing is reloaded), parsed options or a spec string (loaded here)."""
    if isinstance(source, LoadedModel):
        model = source
    elif isinstance(source, argparse.Namespace):
        model = load_model_from_args(source)
    else:
        model = load_model(source)
    file: Path | None = model.file
    described = {
        "model": model.spec,
        "model_sha256": file_sha256(file) if file is not None else None,
        "lower_better": model.lower_better,
        "score_range": list(model.score_range) if model.score_range is not None else None,
        "randomized": model.randomized,
    }
    if model.provenance is not None:
        described["model_provenance"] = json.dumps(model.provenance, sort_keys=True)
    return described


def add_run_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The options of a certification run's output (shared with certify/certify_set.py), on a
    parser or one of its argument groups."""
    parser.add_argument("--out", metavar="FILE",
                        help="results file: .csv or .jsonl (rows written as each image is done) or .json (at the "
                             "end); an existing file is refused unless --resume (keep its images, certify the "
                             "rest) or --overwrite (replace it). Columns: certiqa certify --columns")
    parser.add_argument("--resume", action="store_true",
                        help="keep the images already in --out (same settings required) and certify the rest")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out (without it or --resume, an existing --out is refused)")
    parser.add_argument("--max-noise-mb", type=int, default=DEFAULT_MAX_NOISE_BYTES >> 20, metavar="MB",
                        help="largest noise buffer in MiB; larger images get a smaller batch (%(default)s)")
    parser.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32",
                        help="fp32 (default): the model as given; bf16 / fp16: model and denoiser under "
                             "torch.autocast, and the certificates are those of that reduced-precision model's "
                             "smoothed function (column precision)")
    parser.add_argument("--max-memory-mb", type=int, default=None, metavar="MB",
                        help="memory budget of one model call in MiB: the model batch is the largest that fits, "
                             "measured on one image (default: 80%% of the device's free memory); out-of-memory "
                             "halves it and retries the same noisy images")


def describe_models(args: argparse.Namespace, model: LoadedModel) -> dict[str, Any]:
    """Provenance of the model and the denoiser, recorded in every row and compared on
    ``--resume``: the model as :func:`certiqa.options.describe_model` gives it (spec,
    SHA-256 of its file, lower_better, score_range), and the denoiser as named with
    the SHA-256 of its file."""
    if args.denoiser is None:
        denoiser_file = None
    else:
        denoiser_file = pretrained_path(args.sigma) if args.denoiser == "pretrained" else Path(args.denoiser)
    return {
        **describe_model(model),
        "denoiser": args.denoiser,
        "denoiser_sha256": file_sha256(denoiser_file) if denoiser_file is not None else None,
    }
