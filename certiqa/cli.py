"""The ``certiqa`` command line (also ``python -m certiqa``)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import warnings
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from . import __version__
from .bounds import DECISIONS, DEFAULT_SCHEME, FUTILITY, SPENDING, futility_setting, sequential_looks
from .compare_methods import add_parser as add_compare_methods
from .denoisers import DenoiserMismatchWarning
from .distributed import join
from .io import find_images
from .options import (
    add_model_arguments,
    add_run_arguments,
    describe_models,
    load_denoiser_from_args,
    load_model_from_args,
    resolve_device,
)
from .runner import COLUMNS, RunRefused, certify_paths, check_output_path, format_table
from .smoothing import SmoothedIQA
from .training.command import add_finetune_parser

__all__ = ["main", "build_parser"]

DEFAULT_ALPHA = 0.001


def _log(message: str) -> None:
    tqdm.write(f"certiqa: {message}", file=sys.stderr)


def _certify(args: argparse.Namespace) -> int:
    bad = [e for e in args.eps if not (math.isfinite(e) and e >= 0)]
    if bad:
        raise SystemExit(f"certiqa: error: --eps must be a finite number >= 0 (an l2 radius in [0, 1] pixel units), "
                         f"got {bad[0]}.")
    if args.max_memory_mb is not None and args.max_memory_mb < 1:
        raise SystemExit(f"certiqa: error: --max-memory-mb must be >= 1, got {args.max_memory_mb}.")
    if args.max_noise_mb < 1:
        raise SystemExit(f"certiqa: error: --max-noise-mb must be >= 1, got {args.max_noise_mb}.")
    if args.family_alpha is not None and args.alpha is not None:
        raise SystemExit("certiqa: error: give --alpha (per image) or --family-alpha (for all images at once), "
                         "not both.")
    if args.family_alpha is not None and not 0 < args.family_alpha < 1:
        raise SystemExit(f"certiqa: error: --family-alpha must lie strictly between 0 and 1, got {args.family_alpha}.")
    if args.alpha is None and args.family_alpha is None:
        args.alpha = DEFAULT_ALPHA
    if args.resume and not args.out:
        raise SystemExit("certiqa: error: --resume needs --out, the file to resume.")
    sequential_options = (args.n_max, args.n0, args.growth, args.spending, args.futility, args.futility_error)
    if args.delta is None and any(option is not None for option in sequential_options):
        raise SystemExit("certiqa: error: --n-max, --n0, --growth, --spending, --futility and --futility-error need "
                         "--delta (they set up sequential certification).")
    if args.futility_error is not None and (args.futility or DEFAULT_SCHEME.futility) == "proof":
        raise SystemExit("certiqa: error: --futility-error needs --futility prediction or power "
                         "(the proof test spends alpha).")
    if args.delta is not None and not (math.isfinite(args.delta) and args.delta >= 0):
        raise SystemExit(f"certiqa: error: --delta must be a finite number >= 0, got {args.delta}.")
    sequential = None
    if args.delta is not None:  # each option left out takes its value in bounds.DEFAULT_SCHEME
        given = {name: getattr(args, name) for name in ("n0", "growth", "spending", "futility", "futility_error")}
        scheme = dataclasses.replace(DEFAULT_SCHEME, **{k: v for k, v in given.items() if v is not None})
        sequential = {"delta": args.delta, "n_max": args.n if args.n_max is None else args.n_max,
                      **dataclasses.asdict(scheme)}
    try:
        if args.family_alpha is not None:  # for the check below; the runner sets A / N with N counting each file once
            args.alpha = args.family_alpha / max(len(find_images(args.paths)), 1)
        for eps in args.eps if sequential else ():  # refuse a schedule that cannot work before any work
            sequential_looks(sequential["n0"], sequential["n_max"], args.sigma, eps, args.alpha,
                             sequential["spending"], sequential["futility"], sequential["futility_error"],
                             sequential["growth"])
        if args.out:
            check_output_path(args.out)
        group, device = join(resolve_device(args.device))
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"certiqa: error: {err}") from None
    with group:
        model = load_model_from_args(args).to(device)
        if model.randomized:
            _log(f"note: {model.spec} gave different scores on two calls on the same images: it has randomness of "
                 "its own, so the certificates are about the median over the noise and that randomness together "
                 "(valid when it does not depend on the input); with --seed it is seeded per image "
                 "(column randomized).")
        denoiser = load_denoiser_from_args(args)
        denoiser = denoiser.to(device) if denoiser is not None else None
        try:
            with warnings.catch_warnings(record=True) as caught:  # a denoiser mismatch: one line on stderr
                warnings.simplefilter("always", DenoiserMismatchWarning)
                smoothed = SmoothedIQA(
                    model, args.sigma, n=args.n, alpha=args.alpha, batch_size=args.batch_size, seed=args.seed,
                    denoiser=denoiser, precision=args.precision,
                    max_memory_bytes=None if args.max_memory_mb is None else args.max_memory_mb << 20,
                )
            for warning in caught:
                _log(f"warning: {warning.message}")
            paths = find_images(args.paths)
            if not paths:
                raise ValueError("no image files found in " + ", ".join(args.paths))
            run = certify_paths(
                smoothed, paths, args.eps, out=args.out, provenance=describe_models(args, model), resume=args.resume,
                overwrite=args.overwrite, min_size=model.min_size, max_noise_bytes=args.max_noise_mb << 20, group=group,
                progress=not args.quiet, log=_log, sequential=sequential, family_alpha=args.family_alpha,
            )
        except (RunRefused, ValueError, TypeError, FileNotFoundError) as err:
            raise SystemExit(f"certiqa: error: {err}") from None
    if not run.is_main or run.stopped or run.interrupted is not None and group.distributed:  # nothing to report
        return run.exit_status
    if run.rows:
        print(format_table(run.rows))
    if args.out:
        print(f"wrote {len(run.rows)} row(s) to {args.out}", file=sys.stderr)
    resumed = f", {run.resumed} image(s) kept from {args.out}" if run.resumed else ""
    samples = f"n_max={sequential['n_max']}" if sequential else f"n={args.n}"  # the n the rows were made with
    alpha = run.rows[0]["alpha"] if run.rows else args.alpha
    family = (f"family alpha={args.family_alpha} over {run.rows[0]['family_size']} images, "
              if args.family_alpha is not None and run.rows else "")
    print(
        f"{len(run.rows)} row(s), {run.certified} image(s) {'done' if sequential else 'certified'} now{resumed}, "
        f"{len(run.errors)} failed "
        f"(sigma={args.sigma}, eps={' '.join(map(str, args.eps))}, {samples}, alpha={alpha:g}, {family}"
        f"device={device.type}, processes={group.world_size})",
        file=sys.stderr,
    )
    if sequential and run.rows:
        decided = ", ".join(f"{sum(r['decision'] == d for r in run.rows)} {d}" for d in DECISIONS)
        mean = sum(r["n_used"] for r in run.rows) / len(run.rows)
        futility = futility_setting(sequential["futility"], sequential["futility_error"])
        futile = "; 'futile' is an estimate with no error bound" if sequential["futility"] == "power" else ""
        print(f"sequential (delta={args.delta}, n0={sequential['n0']}, n_max={sequential['n_max']}, "
              f"growth={sequential['growth']:g}, spending={sequential['spending']}, "
              f"futility={futility}): {decided}; "
              f"mean samples per image and radius {mean:g}{futile}", file=sys.stderr)
    return run.exit_status


def _models(args: argparse.Namespace) -> int:
    from .catalog import format_catalog

    print(format_catalog())
    return 0


class _PrintColumns(argparse.Action):
    """``--columns``: print each output column with its meaning (certiqa.runner.COLUMNS) and exit."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        width = max(map(len, COLUMNS))
        print("\n".join(f"{name.ljust(width)}  {meaning}" for name, meaning in COLUMNS.items()))
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="certiqa", description="Certified robustness for NR-IQA models.")
    parser.add_argument("--version", action="version", version=f"certiqa {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    cert = sub.add_parser(
        "certify",
        help="certified score intervals for image files",
        description="Median-smoothed scores and certified intervals under l2 perturbations of norm <= eps. "
                    "Choose the model with --model SPEC (without it, the embedded default model; --weights FILE "
                    "is short for --model cnniqa:FILE). eps and sigma are in pixel units with pixels in [0, 1]: "
                    "eps bounds the l2 norm of the whole perturbation (all pixels and channels), sigma is the "
                    "standard deviation of the noise added to each pixel. The table starts with the model's scale "
                    "and direction; a row that is not certified says why.",
    )
    cert.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    cert.add_argument("--columns", action=_PrintColumns,
                      help="print each column of the results (table and --out file) with its meaning, and exit")
    add_model_arguments(cert)
    smoothing = cert.add_argument_group("certification")
    smoothing.add_argument("--sigma", type=float, default=0.12,
                           help="standard deviation of the Gaussian noise added to each pixel, pixels in [0, 1] "
                                "(0.12)")
    smoothing.add_argument("--eps", type=float, nargs="+", default=[0.05],
                           help="radius (or radii; one sample set serves all): the l2 norm of the whole "
                                "perturbation, pixels in [0, 1] (0.05: on a 512x384 RGB image, 0.017 of an 8-bit level "
                                "on every value at once, or 12.75 levels on one value)")
    smoothing.add_argument("-n", "--n", type=int, default=1000,
                           help="noise samples per image (1000); under torchrun write -n (torchrun takes --n as "
                                "its own)")
    smoothing.add_argument("--alpha", type=float, default=None,
                           help=f"probability that a certificate is wrong, over the noise ({DEFAULT_ALPHA})")
    smoothing.add_argument("--family-alpha", type=float, default=None, metavar="A",
                           help="probability that any of the run's certificates is wrong: each image gets alpha = "
                                "A / N (N images, union bound); rows add family_alpha and family_size")
    smoothing.add_argument("--batch-size", type=int, default=32,
                           help="noisy images per forward pass (32): it bounds memory; not a tuned optimum (on a "
                                "CPU the convolutions cost the same whatever the batch). With --seed the noise "
                                "depends on it (column batch_size); large images get a smaller one (--max-noise-mb)")
    smoothing.add_argument("--seed", type=int, default=None, help="seed for reproducible noise")
    output = cert.add_argument_group("output")
    add_run_arguments(output)
    output.add_argument("--quiet", action="store_true", help="no progress bar")
    scheme = DEFAULT_SCHEME
    seq = cert.add_argument_group(
        "sequential certification",
        "--delta D alone runs the scheme that measured the fewest samples with at most 5 % of decisions "
        f"differing from fixed n (n0 {scheme.n0}, growth {scheme.growth:g}, {scheme.spending} spending, "
        f"{scheme.futility} futility {scheme.futility_error:g}): its 'futile' is an estimate with no error bound. "
        "--futility proof stops an image only where it is proven not certifiable (within alpha).")
    seq.add_argument("--delta", type=float, default=None, metavar="D",
                     help="certify sequentially: decide per image whether the score stays within +-delta (model "
                          "units), with as few samples as that needs; adds decision and n_used columns")
    seq.add_argument("--n-max", type=int, default=None, help="with --delta: samples of the last look (-n)")
    seq.add_argument("--n0", type=int, default=None, help=f"with --delta: samples of the first look ({scheme.n0})")
    seq.add_argument("--growth", type=float, default=None,
                     help=f"with --delta: ratio of successive looks' samples ({scheme.growth:g}: n0, "
                          f"{scheme.growth:g} n0, ...)")
    seq.add_argument("--spending", choices=SPENDING, default=None,
                     help=f"with --delta: how alpha is spread over the looks ({scheme.spending}; final: half "
                          "to the last look, the rest in equal parts)")
    seq.add_argument("--futility", choices=FUTILITY, default=None,
                     help=f"with --delta: when to stop an image that will not certify ({scheme.futility}). power: "
                          "'futile' when the estimated chance that n_max samples certify is below "
                          "--futility-error; fewest samples, no error bound. proof: 'not certifiable', proven "
                          "within alpha. prediction: 'futile' when the fixed-n certificate at n_max would not "
                          "certify either, wrong with probability <= --futility-error")
    seq.add_argument("--futility-error", type=float, default=None,
                     help=f"with --futility prediction or power: that probability per image "
                          f"({scheme.futility_error:g})")
    cert.set_defaults(func=_certify)
    models = sub.add_parser(
        "models",
        help="list the built-in models, the shipped denoisers and pyiqa's no-reference metrics",
        description="The model specs certiqa ships, its denoisers (sigma, the model they were trained for) and, "
                    "when pyiqa is installed, its no-reference metrics with direction and score range.",
    )
    models.set_defaults(func=_models)
    add_compare_methods(sub)
    add_finetune_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
