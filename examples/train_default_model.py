"""Train certiqa's embedded default NR-IQA model (a CNNIQA) on the CPU.

    pip install -e '.[train]'        # scikit-image: the free training photographs
    python examples/train_default_model.py

Data: scikit-image's public-domain/CC0 sample photographs (no download), as ladders
of one crop at increasing severities of a synthetic distortion; loss: L1 to
100 x SSIM plus a ranking hinge inside each ladder. See
certiqa/models/default_training.py. With the defaults, about 11 minutes on one CPU
thread (670 s measured on a shared 2-core machine); it overwrites the embedded
weights (certiqa/weights/default_cnniqa.pt) and writes its log beside them (.json).
Kill it at any time and run the same command with --resume to continue from the
checkpoint (runs/default_model.ckpt).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from certiqa.models import DEFAULT_CONFIG  # noqa: E402
from certiqa.models.default_training import (  # noqa: E402
    TRAINING_PHOTOS,
    VALIDATION_PHOTOS,
    LadderConfig,
    fit_default_model,
    load_skimage_photos,
)


def main() -> None:
    defaults = LadderConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "certiqa" / "weights" / "default_cnniqa.pt")
    parser.add_argument("--log", type=Path, default=None, help="JSON log file (default: OUT with .json)")
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--ladders", type=int, default=defaults.ladders, help="ladders per step")
    parser.add_argument("--rungs", type=int, default=defaults.rungs, help="distorted versions per ladder")
    parser.add_argument("--bank", type=int, default=defaults.bank, help="training ladders drawn before training")
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--rank-weight", type=float, default=defaults.rank_weight)
    parser.add_argument("--margin", type=float, default=defaults.margin, help="ranking margin (score points)")
    parser.add_argument("--min-gap", type=float, default=defaults.min_gap,
                        help="rank two versions only if their labels differ by this much (score points)")
    parser.add_argument("--grain", type=float, default=defaults.grain, help="max std of grain on references")
    parser.add_argument("--sharpen", type=float, default=defaults.sharpen, help="max unsharp-mask amount on references")
    parser.add_argument("--kernels", type=int, default=DEFAULT_CONFIG["kernels"])
    parser.add_argument("--hidden", type=int, default=DEFAULT_CONFIG["hidden"])
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--log-every", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    parser.add_argument("--checkpoint", type=Path, default=REPO / "runs" / "default_model.ckpt",
                        help="run state, written every 100 steps (default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if (args.kernels, args.hidden) != (DEFAULT_CONFIG["kernels"], DEFAULT_CONFIG["hidden"]):
        print(f"note: kernels/hidden differ from certiqa.models.DEFAULT_CONFIG {DEFAULT_CONFIG}; "
              "default_model() will not load this file unless the config is changed too.")
    config = LadderConfig(
        steps=args.steps, ladders=args.ladders, rungs=args.rungs, bank=args.bank, lr=args.lr,
        rank_weight=args.rank_weight, margin=args.margin, min_gap=args.min_gap, grain=args.grain,
        sharpen=args.sharpen, kernels=args.kernels,
        hidden=args.hidden, seed=args.seed,
    )
    start = time.perf_counter()
    result = fit_default_model(
        load_skimage_photos(TRAINING_PHOTOS), config, val_photos=load_skimage_photos(VALIDATION_PHOTOS),
        log_every=args.log_every, checkpoint=args.checkpoint, resume=args.resume,
        progress=not args.quiet, log=lambda line: print(line, flush=True),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(result.model.state_dict(), args.out)
    log_path = args.log or args.out.with_suffix(".json")
    record = {
        "command": "python examples/train_default_model.py",
        "config": {**dataclasses.asdict(config), "scales": list(config.scales)},
        "threads": args.threads,
        "training_photos": TRAINING_PHOTOS, "validation_photos": VALIDATION_PHOTOS,
        "data_seconds": result.data_seconds, "train_seconds": result.seconds, "history": result.history,
    }
    log_path.write_text(json.dumps(record, indent=1))
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) and {log_path}; "
          f"this part {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
