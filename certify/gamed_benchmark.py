"""A benchmark that someone tried to game, and what certified statements say about it.

    python certify/gamed_benchmark.py --out runs/gamed

Methods are JPEG at several qualities (an honest ladder: a higher quality is a better
method) plus "tuned": the outputs of a low-quality JPEG (--tuned-quality), pushed up by an l2
PGD attack of size --attack-eps on the base model (the undefended NR-IQA metric a benchmark would use). Each
method processes the same source photographs (scikit-image's CC0 / public-domain photos, or
--images), centre-cropped to --crop pixels; outputs are written as 8-bit PNGs, so the
manipulation the benchmark receives is the rounded one, whose l2 size is measured and reported.

Every output is certified once (``certiqa.runner.certify_paths``, the engine of ``certiqa
certify``: --resume works) with the smoothed model (base model + denoiser at --sigma: the
shipped one by default, ``--denoiser none`` for plain smoothing) at the
radii --eps and at the smallest radius (in steps of 0.01) that covers every tuned output's
manipulation as saved, at family level --family-alpha. The script then reports:

- the ranking of the methods by the base model's mean score (the ``clean`` column) and by the
  smoothed model's mean score;
- what the manipulation bought: the tuned method's mean score minus that of the JPEG it came
  from, for the base and the smoothed model, beside the certified bound on any manipulation's
  gain (the tuned method's mean certified width at an eps >= the manipulation's size);
- the certified statements (``certiqa.statements.compare``): intervals, certified order, rank
  intervals, per-source wins; written to statements.csv (and statements.png with matplotlib).

Files in --out: images/METHOD/SOURCE.png, methods.csv, results.csv, statements.csv,
statements.png, summary.md. The same statements come from the command line with
``certiqa compare-methods OUT/results.csv --methods OUT/methods.csv``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import torch
from PIL import Image

from certiqa.attacks import PGDL2
from certiqa.compare_methods import format_statements, plot_statements, read_assignments, write_statements
from certiqa.data import center_crop
from certiqa.distortions import distort_with
from certiqa.io import read_image, resize_image
from certiqa.options import (
    add_model_arguments,
    describe_models,
    load_denoiser_from_args,
    load_model_from_args,
    require_metadata,
    resolve_device,
)
from certiqa.runner import RunRefused, certify_paths
from certiqa.smoothing import SmoothedIQA
from certiqa.statements import Statements, compare

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
TUNED = "tuned"


def photographs(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """Source name -> (3, crop, crop) image: the shorter side resized to --crop, then centre-cropped."""
    if args.images:
        loaded = {Path(p).stem: read_image(p).image for p in args.images}
    else:
        from certiqa.models.default_training import load_skimage_photos

        try:
            loaded = dict(zip(args.photos, load_skimage_photos(args.photos)))
        except (ImportError, ValueError) as err:
            raise SystemExit(f"error: {err} Or pass --images FILE...") from None
    return {name: center_crop(resize_image(x, args.crop), args.crop) for name, x in loaded.items()}


def to_png(x: torch.Tensor, path: Path) -> torch.Tensor:
    """Save (3, H, W) in [0, 1] as an 8-bit PNG; return what the file holds, as floats."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (x.detach().clamp(0, 1) * 255).round().to(torch.uint8)
    Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(path)
    return pixels.float() / 255


def make_methods(args: argparse.Namespace, model: torch.nn.Module, out: Path) -> tuple[list[dict[str, str]], float]:
    """Write every method's output for every source; return the methods table and the largest
    l2 distance between a tuned output and the JPEG output it was made from (as saved)."""
    table, sizes = [], []
    attack = PGDL2(model, args.attack_eps, steps=args.attack_steps, direction="better")
    for source, x in photographs(args).items():
        saved = {}
        for quality in args.qualities:
            method = f"jpeg{quality:g}"
            path = out / "images" / method / f"{source}.png"
            saved[quality] = to_png(distort_with(x[None], "jpeg", quality)[0], path)
            table.append({"path": str(path), "method": method, "source": source})
        start = saved[args.tuned_quality]
        path = out / "images" / TUNED / f"{source}.png"
        tuned = to_png(attack(start[None])[0], path)
        sizes.append(float((tuned - start).norm()))
        table.append({"path": str(path), "method": TUNED, "source": source})
    with open(out / "methods.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "method", "source"])
        writer.writeheader()
        writer.writerows(table)
    return table, max(sizes)


def ranking(values: dict[str, float | None], lower_better: bool) -> str:
    order = sorted(values, key=lambda m: values[m] if not lower_better else -values[m], reverse=True)
    return " > ".join(f"{m} ({values[m]:.2f})" for m in order)


def summary(s: Statements, honest: str, size: float) -> list[str]:
    """What the manipulation bought, against what the certificate bounds, at one radius."""
    sign = -1.0 if s.lower_better else 1.0
    base_gain = sign * (s.mean_clean[TUNED] - s.mean_clean[honest])
    smoothed_gain = sign * (s.mean_median[TUNED] - s.mean_median[honest])
    covered = "covers" if s.eps >= size else "does NOT cover"
    return [
        f"- eps {s.eps:g} (family level {s.level:.3g}; {covered} the manipulation, l2 size <= {size:.3f}):",
        f"  - base model ranks: {ranking(s.mean_clean, s.lower_better)}",
        f"  - smoothed model ranks: {ranking(s.mean_median, s.lower_better)}",
        f"  - the attack's gain over {honest}: base model {base_gain:+.2f}, smoothed model {smoothed_gain:+.2f}; "
        f"certified bound on any eps-manipulation's gain for {TUNED}: mean {s.mean_width[TUNED]:.2f}, "
        f"max {s.max_width[TUNED]:.2f}",
        f"  - certified order: {', '.join(f'{a} > {b}' for a, b in s.diagram) or 'none'}; {TUNED} ranks "
        f"{s.rank_best[TUNED]}-{s.rank_worst[TUNED]} of {len(s.methods)}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS), help="scikit-image photographs (needs it)")
    parser.add_argument("--images", nargs="+", help="image files to use instead of --photos")
    parser.add_argument("--crop", type=int, default=64, help="side of the square crop (64)")
    parser.add_argument("--qualities", type=float, nargs="+", default=[90, 30, 10, 4],
                        help="JPEG qualities of the honest ladder (90 30 10 4)")
    parser.add_argument("--tuned-quality", type=float, default=10,
                        help="the ladder's quality whose outputs are attacked (10)")
    parser.add_argument("--attack-eps", type=float, default=0.1, help="l2 size of the attack, [0, 1] pixels (0.1)")
    parser.add_argument("--attack-steps", type=int, default=20, help="PGD steps (20)")
    add_model_arguments(parser)
    parser.set_defaults(denoiser="pretrained")
    parser.add_argument("--sigma", type=float, default=0.12, help="smoothing noise level (0.12)")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.05, 0.1],
                        help="radii to certify and state, besides the one covering the manipulation; one sample set "
                             "serves all (0.05 0.1)")
    parser.add_argument("-n", "--n", type=int, default=512, help="noise samples per image (512)")
    parser.add_argument("--family-alpha", type=float, default=0.01, help="family level of all statements (0.01)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="keep the images already certified in OUT/results.csv")
    args = parser.parse_args(argv)
    if args.denoiser == "none":
        args.denoiser = None
    if args.tuned_quality not in args.qualities:
        raise SystemExit(f"error: --tuned-quality {args.tuned_quality:g} must be one of --qualities "
                         f"{' '.join(f'{q:g}' for q in args.qualities)} (the honest method it is compared with).")

    device = resolve_device(args.device)
    model = load_model_from_args(args)
    require_metadata(args, model, "lower_better")
    denoiser = load_denoiser_from_args(args)
    args.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    table, size = make_methods(args, model, args.out)
    covering = math.ceil(size * 100) / 100  # the smallest radius (in 0.01 steps) that covers every manipulation
    radii = sorted(set(args.eps) | {covering})
    smoothed = SmoothedIQA(model.to(device), args.sigma, n=args.n, batch_size=args.batch_size, seed=args.seed,
                           denoiser=denoiser.to(device) if denoiser is not None else None)
    try:
        run = certify_paths(smoothed, [row["path"] for row in table], radii, out=args.out / "results.csv",
                            provenance=describe_models(args, model), resume=args.resume, min_size=model.min_size,
                            progress=False, family_alpha=args.family_alpha)
        statements = compare(run.rows, read_assignments(args.out / "methods.csv"), family_alpha=args.family_alpha)
    except (RunRefused, ValueError) as err:
        raise SystemExit(f"error: {err}") from None
    honest = f"jpeg{args.tuned_quality:g}"
    lines = [f"{len(table)} outputs ({len(args.qualities) + 1} methods x {len(table) // (len(args.qualities) + 1)} "
             f"sources, {args.crop}x{args.crop}); {TUNED} = {honest} + PGD-l2 (eps {args.attack_eps:g}, "
             f"{args.attack_steps} steps) on the base model; smoothing sigma {args.sigma:g}, n {args.n}, "
             f"denoiser {args.denoiser or 'none'}"]
    for s in statements:
        lines += summary(s, honest, size)
    text = "\n".join(lines)
    (args.out / "summary.md").write_text(text + "\n")
    write_statements(statements, args.out / "statements.csv")
    print(text + "\n\n" + format_statements(statements))
    try:
        plot_statements(statements, args.out / "statements.png")
    except ImportError as err:
        print(f"note: {err}", file=sys.stderr)
    return run.exit_status


if __name__ == "__main__":
    sys.exit(main())
