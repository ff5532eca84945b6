"""How tight are the certificates? Attack each image's smoothed median towards both bounds.

    python certify/attack_certificates.py IMAGE... --weights ../shared/data/models/cnniqa-live.pt \
        --sigma 0.12 --n 1000 --eps 0.25 --crop 96 --strong --out runs/tightness.csv

Per image and radius: the certified [lower, upper] around the smoothed median, the
smoothed medians after the adaptive attack (certiqa.attacks.SmoothedPGDL2) up and down
(re-estimated from fresh noise), and the tightness ratio of each side (the fraction of
that side's certified half-width the attack achieved; see certiqa.tightness).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from tqdm.auto import tqdm  # noqa: E402

from certiqa.options import add_model_arguments, load_denoiser_from_args, load_model_from_args, resolve_device  # noqa: E402
from certiqa.io import find_images, read_image  # noqa: E402
from certiqa.smoothing import SmoothedIQA  # noqa: E402
from certiqa.tightness import probe_certificate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", help="image files or folders")
    add_model_arguments(parser)
    parser.add_argument("--sigma", type=float, default=0.12)
    parser.add_argument("--eps", type=float, nargs="+", default=[0.25])
    parser.add_argument("--n", type=int, default=1000, help="samples for the certificate and the attacked medians")
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resize", type=int, help="shorter side in pixels before the crop")
    parser.add_argument("--crop", type=int, help="centre crop of this size (square)")
    parser.add_argument("--strong", action="store_true", help="the strong attack (50 steps x 256 draws x 3 restarts)")
    parser.add_argument("--steps", type=int, help="override the attack's steps")
    parser.add_argument("--samples", type=int, help="override the attack's noise draws per step")
    parser.add_argument("--restarts", type=int, help="override the attack's restarts")
    parser.add_argument("--threads", type=int, help="torch threads")
    parser.add_argument("--out", type=Path, help="CSV of the per-image results")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = load_model_from_args(args).to(device)
    denoiser = load_denoiser_from_args(args)
    smoothed = SmoothedIQA(model, args.sigma, n=args.n, alpha=args.alpha, batch_size=args.batch_size, seed=args.seed,
                           denoiser=None if denoiser is None else denoiser.to(device))
    overrides = {k: getattr(args, k) for k in ("steps", "samples", "restarts") if getattr(args, k) is not None}
    rows = []
    paths = find_images(args.paths)
    for path in tqdm(paths, desc="attacking certificates", unit="img"):
        image = read_image(path, resize=args.resize, min_size=getattr(model, "min_size", 1)).image
        if args.crop:
            top, left = (image.shape[1] - args.crop) // 2, (image.shape[2] - args.crop) // 2
            image = image[:, max(top, 0) : max(top, 0) + args.crop, max(left, 0) : max(left, 0) + args.crop]
        for eps in args.eps:
            start = time.perf_counter()
            r = probe_certificate(smoothed, image[None].contiguous(), eps, strong=args.strong, seed=args.seed,
                                  **overrides)
            rows.append({"path": str(path), "eps": eps, "median": r.median, "lower": r.lower, "upper": r.upper,
                         "attacked_up": r.attacked_up, "attacked_down": r.attacked_down, "ratio_up": r.ratio_up,
                         "ratio_down": r.ratio_down, "ratio": r.ratio, "seconds": round(time.perf_counter() - start, 1)})
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()))
    for eps in args.eps:
        ratios = [r["ratio"] for r in rows if r["eps"] == eps]
        sides = [r[k] for r in rows if r["eps"] == eps for k in ("ratio_up", "ratio_down")]
        print(f"eps={eps:g}: {len(ratios)} images, best-side tightness ratio median {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f}); both sides: median {statistics.median(sides):.3f}, "
              f"wrong-direction moves {sum(s < 0 for s in sides)}/{len(sides)}; "
              f"setting: sigma={args.sigma}, n={args.n}, alpha={args.alpha}, "
              f"attack={'strong' if args.strong else 'default'} {overrides or ''}, crop={args.crop}, resize={args.resize}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
