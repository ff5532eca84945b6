"""Choose sigma: fidelity and certified width of the smoothed model for several noise levels.

    python certify/sweep_sigma.py IMAGES [--weights FILE] [--sigma 0.03 0.06 0.12 0.25]
        [--denoiser SIGMA=FILE ...] [--student SIGMA=FILE ...] [--n 100] [--alpha 0.001] [--eps 0.02 0.05 0.1]
        [--human-include images/labelled] [--out sweep.csv] [--plot sweep.png]

IMAGES is a folder (searched recursively) or a manifest CSV with a ``file`` column
(paths relative to it) and optionally ``score`` (human scores; with ``scale_min``,
``scale_max`` and ``higher_is_better`` columns they are mapped to a goodness in [0, 1],
so datasets on different scales pool). For every sigma it runs plain median smoothing
and, where ``--denoiser SIGMA=FILE`` gives one for that sigma, denoised smoothing, on
the same images with the same noise seed, and prints one row each: SROCC / PLCC
(logistic5) of the smoothed median against the clean scores, the mean |median - clean|
shift, SROCC / PLCC against the human scores (when the manifest has any), and the mean
certified width at each eps (score units; alpha per certificate). ``--denoiser
pretrained`` takes the shipped denoisers of the default model at every sigma that has
one (0.06, 0.12, 0.25). ``--student SIGMA=FILE`` adds a row for a student of the model
fine-tuned for that sigma (``certiqa finetune``): the smoothed student against the model's
clean scores (denoiser column ``student``). Correlations need >= 3 images (NaN otherwise).

Example (CNNIQA-LIVE, its sigma 0.12 denoiser, the labelled images' human scores):

    python certify/sweep_sigma.py ../shared/data/manifest.csv --weights ../shared/data/models/cnniqa-live.pt \
        --denoiser 0.12=denoisers/weights/cnniqa_live_sigma0.12.pt --human-include images/labelled \
        --n 32 --out runs/sweep/live.csv --plot runs/sweep/live.png
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from certiqa.models import load_model  # noqa: E402
from certiqa.options import add_model_arguments, load_model_from_args, model_spec, resolve_device  # noqa: E402
from certiqa.denoisers import PRETRAINED_SIGMAS, load_denoiser, pretrained  # noqa: E402
from certiqa.denoisers.training import load_images  # noqa: E402
from certiqa.sweep import SWEEP_SIGMAS, format_sweep, plot_sweep, read_human_scores, sweep_sigma  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", type=Path, help="image folder or manifest CSV (file[, score, ...] columns)")
    add_model_arguments(p, denoiser=False)
    p.add_argument("--sigma", type=float, nargs="+", default=list(SWEEP_SIGMAS),
                   help="noise levels to compare, pixels in [0, 1] (default: %(default)s, doubling steps through the "
                        "sigmas of the shipped denoisers: a grid to choose from, not a measured best)")
    p.add_argument("--denoiser", action="append", default=[], metavar="SIGMA=FILE|pretrained",
                   help="denoiser file for one sigma (repeat for others); 'pretrained': the default model's "
                        "shipped ones")
    p.add_argument("--student", action="append", default=[], metavar="SIGMA=FILE",
                   help="a student of the model fine-tuned for one sigma (certiqa finetune); repeat for others")
    p.add_argument("--n", type=int, default=100,
                   help="noise samples per image (default %(default)s: a screening budget; certify the chosen sigma "
                        "with certiqa certify, n 1000, whose intervals are narrower)")
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--eps", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    p.add_argument("--include", nargs="*", default=[], help="keep only files whose path contains one of these")
    p.add_argument("--human-include", nargs="*", default=[],
                   help="manifest rows whose score is a human score (path contains one of these; default: all scored)")
    p.add_argument("--resize", type=int, default=None, help="shorter side of every image (default: full size)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=None, help="write the table as CSV")
    p.add_argument("--plot", type=Path, default=None, help="write a plot (needs matplotlib), e.g. sweep.png")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _denoisers(items: list[str], sigmas: list[float], spec: str, device: torch.device) -> dict:
    out = {}
    for item in items:
        if item == "pretrained":
            if spec != "default":
                raise ValueError("--denoiser pretrained was trained for the default model; drop --model/--weights "
                                 "or give SIGMA=FILE denoisers trained for your model.")
            out.update({s: pretrained(s, device=device) for s in sigmas if any(abs(s - t) < 1e-9 for t in PRETRAINED_SIGMAS)})
            continue
        value, path = _sigma_file("--denoiser", item, " or 'pretrained'")
        out[value] = load_denoiser(path, device=device)
    return out


def _sigma_file(flag: str, item: str, alternative: str = "") -> tuple[float, str]:
    sigma, sep, path = item.partition("=")
    try:
        value = float(sigma)
    except ValueError:
        value = None
    if not sep or value is None:
        raise ValueError(f"{flag} takes SIGMA=FILE (e.g. 0.12=file.pt){alternative}, got {item!r}.")
    return value, path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    try:
        model = load_model_from_args(args).to(device).eval()
        denoisers = _denoisers(args.denoiser, args.sigma, model_spec(args), device)
        students = {}
        for item in args.student:
            value, path = _sigma_file("--student", item)
            students[value] = load_model(path).to(device).eval()
        images = load_images(args.images, resize=args.resize, min_size=getattr(model, "min_size", 1),
                             include=args.include)
        is_manifest = args.images.suffix.lower() == ".csv"
        human = read_human_scores(args.images, args.human_include) if is_manifest else None
        table = sweep_sigma(model, images, args.sigma, denoisers=denoisers, students=students, human=human or None, n=args.n,
                            alpha=args.alpha, eps=args.eps, seed=args.seed, batch_size=args.batch_size,
                            progress=not args.quiet)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise SystemExit(f"sweep_sigma.py: error: {err}") from None
    print(f"\n{len(images)} images, n {args.n}, alpha {args.alpha}, noise seed {args.seed}, "
          f"resize {args.resize or 'none (full size)'}\n")
    print(format_sweep(table, args.eps))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(table[0]))
            writer.writeheader()
            writer.writerows(table)
        print(f"\nwrote {args.out}")
    if args.plot:
        try:
            print(f"wrote {plot_sweep(table, args.eps, args.plot)}")
        except ImportError as err:
            print(f"sweep_sigma.py: no plot: {err}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
