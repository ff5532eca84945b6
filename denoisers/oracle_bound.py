"""How well could any denoiser keep a model's ranking? The oracle bound, without a denoiser.

For every image of a manifest it scores the clean image x, x plus white Gaussian residual
noise of each --residual std (the median of --n draws) and x Gaussian-blurred by each --blur
sigma (the detail a denoiser removes), then prints each column's SROCC / KROCC against the
clean scores and its mean |score - clean| shift (certiqa.denoisers.evaluation.oracle_records).
A denoiser's output is at best the clean image plus such an error; where even the oracle
column misses a target, no denoiser reaches it at that error.

    python denoisers/oracle_bound.py --threads 1 --out runs/oracle/cnniqa_live.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from certiqa import metrics  # noqa: E402
from certiqa.denoisers.evaluation import oracle_records  # noqa: E402
from certiqa.denoisers.training import load_images  # noqa: E402
from certiqa.options import add_model_arguments, load_model_from_args, resolve_device  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    data = REPO.parent / "shared" / "data"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(data / "manifest.csv"), help="manifest CSV or folder (default: %(default)s)")
    add_model_arguments(p, default=f"cnniqa:{data / 'models' / 'cnniqa-live.pt'}", denoiser=False)
    p.add_argument("--residual", type=float, nargs="*", default=[0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08],
                   help="residual noise stds (default: %(default)s)")
    p.add_argument("--blur", type=float, nargs="*", default=[0.3, 0.5, 0.8, 1.2],
                   help="Gaussian blur sigmas in pixels (default: %(default)s)")
    p.add_argument("--n", type=int, default=8, help="noise draws per image and residual std")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", default=None, help="per-image rows (CSV)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.n < 1:
        raise SystemExit(f"oracle_bound.py: error: --n must be >= 1, got {args.n}.")
    model = load_model_from_args(args).to(resolve_device(args.device))
    try:
        images = load_images(args.data, min_size=model.min_size)
        rows = oracle_records(model, images, args.residual, args.blur, n=args.n, seed=args.seed,
                              progress=not args.quiet)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"oracle_bound.py: error: {err}") from None
    clean = [r["clean"] for r in rows]
    print(f"{len(rows)} images, n {args.n}, noise seed {args.seed}\n")
    print("| the denoiser's output | SROCC vs clean | KROCC | mean abs shift |")
    print("|---|---|---|---|")
    for key in [k for k in rows[0] if k not in ("name", "clean")]:
        kind, value = key.split("_")
        label = f"clean + white noise, std {value}" if kind == "noise" else f"clean, Gaussian blur sigma {value} px"
        col = [r[key] for r in rows]
        shift = sum(abs(a - b) for a, b in zip(col, clean)) / len(rows)
        print(f"| {label} | {metrics.srocc(col, clean):.3f} | {metrics.krocc(col, clean):.3f} | {shift:.2f} |")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
