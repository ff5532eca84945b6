"""Certify a scored image set (a folder + CSV with path and score columns) and summarise it.

    python certify/certify_set.py ../shared/data --model cnniqa:../shared/data/models/cnniqa-live.pt \
        --where dataset=LIVE-gblur --scale 0 1 --eps 0.02 0.05 0.1 --n 50 --resize 192 --out runs/gblur.csv

--model takes any model spec (certiqa.models.load_model): default, cnniqa:FILE, a TorchScript
archive or exported program, module:factory(...), pyiqa:NAME.

Writes one row per image and radius (the columns of ``certiqa certify``, plus the
human ``score``) as each image is done, then prints per radius: images certified,
mean width, and the SROCC/PLCC of the smoothed median against the scores. The same
engine as ``certiqa certify``: ``--resume``, SIGINT/SIGTERM and torchrun work the same
(``torchrun --nproc-per-node K certify/certify_set.py ...``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from certiqa.options import (  # noqa: E402
    add_model_arguments,
    add_run_arguments,
    describe_models,
    load_denoiser_from_args,
    load_model_from_args,
    resolve_device,
)
from certiqa.data import CSVDataset  # noqa: E402
from certiqa.distributed import join  # noqa: E402
from certiqa.runner import RunRefused, certify_paths, summarize_by_eps  # noqa: E402
from certiqa.smoothing import SmoothedIQA  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="folder the CSV's paths are relative to")
    parser.add_argument("--table", type=Path, help="CSV file (default ROOT/manifest.csv)")
    parser.add_argument("--path-column", default="file")
    parser.add_argument("--score-column", default="score")
    parser.add_argument("--scale", type=float, nargs=2, default=(0.0, 100.0), metavar=("MIN", "MAX"),
                        help="the scores' scale; correlations need one scale, so filter mixed tables with --where")
    parser.add_argument("--scores-lower-better", action="store_true",
                        help="lower scores in the table mean better quality (the model's direction is --lower-better)")
    parser.add_argument("--where", nargs="*", default=[], metavar="COLUMN=VALUE", help="keep rows matching these")
    add_model_arguments(parser)
    parser.add_argument("--sigma", type=float, default=0.12)
    parser.add_argument("--eps", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    parser.add_argument("-n", "--n", type=int, default=1000, help="noise samples per image (write -n under torchrun)")
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resize", type=int, help="shorter side in pixels (stated in the output rows)")
    parser.add_argument("--limit", type=int, help="only the first N images")
    add_run_arguments(parser)
    args = parser.parse_args(argv)

    group, device = join(resolve_device(args.device))
    with group:
        model = load_model_from_args(args).to(device)
        denoiser = load_denoiser_from_args(args)
        data = CSVDataset(args.root, args.table, scale=tuple(args.scale), higher_is_better=not args.scores_lower_better,
                          path_column=args.path_column, score_column=args.score_column, skip_unscored=True,
                          where=dict(w.split("=", 1) for w in args.where))
        samples = data.samples[: args.limit]
        smoothed = SmoothedIQA(model, args.sigma, n=args.n, alpha=args.alpha, batch_size=args.batch_size,
                               seed=args.seed, denoiser=denoiser.to(device) if denoiser is not None else None,
                               precision=args.precision,
                               max_memory_bytes=None if args.max_memory_mb is None else args.max_memory_mb << 20)
        try:
            run = certify_paths(
                smoothed, [str(s.path) for s in samples], args.eps, out=args.out,
                provenance=describe_models(args, model), extra={str(s.path): {"score": s.score} for s in samples},
                resume=args.resume, overwrite=args.overwrite, min_size=model.min_size, resize=args.resize,
                max_noise_bytes=args.max_noise_mb << 20, group=group,
            )
        except (RunRefused, ValueError) as err:
            raise SystemExit(f"error: {err}") from None
    if run.is_main and run.rows and not run.stopped:  # a stopped run said what is kept; its summary would be partial
        print(summarize_by_eps(run.rows))
    return run.exit_status


if __name__ == "__main__":
    sys.exit(main())
