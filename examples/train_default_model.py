"""Train certiqa's embedded default NR-IQA model (a small CNNIQA) on the CPU.

    pip install -e '.[train]'        # scikit-image: the free training photographs
    python examples/train_default_model.py --out certiqa/weights/default_cnniqa.pt

Data: scikit-image's public-domain/CC0 sample photographs (no download), distorted
by certiqa.distortions at levels 1-5, labelled 100 x SSIM to the pristine photo.
See certiqa/training.py. With the defaults, about 12 minutes on one CPU thread (measured
on a 2-core machine shared with other jobs); it overwrites the embedded weights.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from certiqa.models import DEFAULT_CONFIG
from certiqa.training import (
    TRAINING_PHOTOS,
    VALIDATION_PHOTOS,
    build_synthetic_dataset,
    fit_cnniqa,
    load_skimage_photos,
)

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "certiqa" / "weights" / "default_cnniqa.pt")
    parser.add_argument("--log", type=Path, default=None, help="JSON log file (default: OUT with .json)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32, help="crops per step (9 patches each)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--kernels", type=int, default=DEFAULT_CONFIG["kernels"])
    parser.add_argument("--hidden", type=int, default=DEFAULT_CONFIG["hidden"])
    parser.add_argument("--crops-per-version", type=int, default=8)
    parser.add_argument("--pristine-copies", type=int, default=10, help="undistorted versions per photo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if (args.kernels, args.hidden) != (DEFAULT_CONFIG["kernels"], DEFAULT_CONFIG["hidden"]):
        print(f"note: kernels/hidden differ from certiqa.models.DEFAULT_CONFIG {DEFAULT_CONFIG}; "
              "default_model() will not load this file unless the config is changed too.")
    start = time.perf_counter()
    options = dict(crops_per_version=args.crops_per_version, pristine_copies=args.pristine_copies,
                   progress=not args.quiet)
    train = build_synthetic_dataset(load_skimage_photos(TRAINING_PHOTOS), seed=args.seed, **options)
    val = build_synthetic_dataset(load_skimage_photos(VALIDATION_PHOTOS), seed=args.seed + 1, **options)
    data_seconds = time.perf_counter() - start
    print(f"{len(train)} training crops from {len(TRAINING_PHOTOS)} photos, {len(val)} validation crops "
          f"from {len(VALIDATION_PHOTOS)} photos ({data_seconds:.1f} s)")
    result = fit_cnniqa(
        train, val, kernels=args.kernels, hidden=args.hidden, steps=args.steps, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, progress=not args.quiet,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(result.model.state_dict(), args.out)
    log_path = args.log or args.out.with_suffix(".json")
    record = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "training_photos": TRAINING_PHOTOS, "validation_photos": VALIDATION_PHOTOS,
        "train_crops": len(train), "val_crops": len(val), "data_seconds": data_seconds,
        "train_seconds": result.seconds, "history": result.history,
    }
    log_path.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) and {log_path}; "
          f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
