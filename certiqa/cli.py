"""The ``certiqa`` command line (also ``python -m certiqa``)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from . import __version__
from .io import find_images
from .options import add_model_arguments, load_denoiser_from_args, load_model_from_args, resolve_device
from .runner import certify_paths, check_output_path, format_table, write_results
from .smoothing import SmoothedIQA

__all__ = ["main", "build_parser"]


def _certify(args: argparse.Namespace) -> int:
    bad = [e for e in args.eps if not e >= 0]
    if bad:
        raise SystemExit(f"certiqa: error: --eps must be >= 0, got {bad[0]}.")
    device = resolve_device(args.device)
    model = load_model_from_args(args).to(device)
    denoiser = load_denoiser_from_args(args)
    denoiser = denoiser.to(device) if denoiser is not None else None
    try:
        if args.out:
            check_output_path(args.out)
        smoothed = SmoothedIQA(
            model, args.sigma, n=args.n, alpha=args.alpha, batch_size=args.batch_size, seed=args.seed,
            denoiser=denoiser,
        )
        paths = find_images(args.paths)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise SystemExit(f"certiqa: error: {err}") from None
    if not paths:
        raise SystemExit("certiqa: error: no image files found in " + ", ".join(args.paths))
    run = certify_paths(smoothed, paths, args.eps, min_size=model.min_size, progress=not args.quiet)
    for message in run.errors:
        print(f"certiqa: error: {message}", file=sys.stderr)
    if run.rows:
        print(format_table(run.rows))
    if args.out:
        write_results(run.rows, args.out)
        print(f"wrote {len(run.rows)} row(s) to {args.out}", file=sys.stderr)
    print(
        f"{len(run.rows)} row(s), {len(run.errors)} failed (sigma={args.sigma}, eps={' '.join(map(str, args.eps))}, "
        f"n={args.n}, alpha={args.alpha}, device={device.type})",
        file=sys.stderr,
    )
    return 1 if run.errors else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="certiqa", description="Certified robustness for NR-IQA models.")
    parser.add_argument("--version", action="version", version=f"certiqa {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    cert = sub.add_parser(
        "certify",
        help="certified score intervals for image files",
        description="Median-smoothed scores and certified intervals under l2 perturbations of norm <= eps.",
    )
    cert.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders (searched recursively)")
    add_model_arguments(cert)
    cert.add_argument("--sigma", type=float, default=0.12, help="noise level in [0, 1] pixel units (0.12)")
    cert.add_argument("--eps", type=float, nargs="+", default=[0.05],
                      help="l2 radius (or radii, one sample set serves all) to certify (0.05)")
    cert.add_argument("--n", type=int, default=1000, help="noise samples per image (1000)")
    cert.add_argument("--alpha", type=float, default=0.001, help="failure probability (0.001)")
    cert.add_argument("--batch-size", type=int, default=32, help="noisy images per forward pass (32)")
    cert.add_argument("--seed", type=int, default=None, help="seed for reproducible noise")
    cert.add_argument("--out", metavar="FILE", help="write results to a .csv or .json file")
    cert.add_argument("--quiet", action="store_true", help="no progress bar")
    cert.set_defaults(func=_certify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
