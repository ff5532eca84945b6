"""Train a denoiser D for a frozen NR-IQA model f and a noise level sigma (or a range).

Example (CNNIQA-LIVE, sigma 0.12, MSE + ranking, a few minutes on a CPU), on redistributable
scikit-image photographs and their graded distortions (never on ../shared/data: it is the
evaluation set):

    python denoisers/make_training_photos.py runs/photos_grid --grid gaussian_blur jpeg gaussian_noise pixelate quantize
    python denoisers/train.py --model cnniqa:../shared/data/models/cnniqa-live.pt --data runs/photos_grid \
        --sigma 0.12 --crop 97 --steps 300 --w-mse 1 --w-rank 0.05 --out runs/live_s012_rank

Kill it at any time and add --resume to the same command to continue where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from certiqa.denoisers import ARCHITECTURES  # noqa: E402
from certiqa.denoisers.training import TrainConfig, load_images, train_denoiser  # noqa: E402
from certiqa.losses import LossWeights  # noqa: E402
from certiqa.options import add_model_arguments, load_model_from_args, model_spec, resolve_device  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, denoiser=False)  # the frozen base model (default: the embedded default model)
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "manifest.csv"),
                   help="training images: a folder or a manifest CSV with 'file' [and 'score'] columns")
    p.add_argument("--include", nargs="*", default=[], help="keep only files whose relative path contains one of these")
    p.add_argument("--val-data", default=None, help="validation images (folder or manifest CSV); default: none")
    p.add_argument("--val-include", nargs="*", default=[], help="filter for --val-data, as --include")
    p.add_argument("--val-resize", type=int, default=96,
                   help="shorter side of validation images (default %(default)s; 0: full size)")
    p.add_argument("--resize", type=int, default=None, help="resize training images to this shorter side first")
    p.add_argument("--sigma", type=float, nargs="+", required=True, help="noise level, or MIN MAX for a range")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--crop", type=int, default=96, help="square crop size in pixels (>= 33 for CNNIQA)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                   help="constant, or cosine decay from --lr to 0 over --steps")
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default="dncnn")
    p.add_argument("--arch-config", default='{"depth": 6, "features": 24, "batch_norm": false}',
                   help="JSON config of the architecture (default: %(default)s)")
    p.add_argument("--w-mse", type=float, default=1.0, help="weight of the image MSE")
    p.add_argument("--w-fidelity", type=float, default=0.0, help="weight of |f(D(x+G)) - t| (scaled scores)")
    p.add_argument("--w-rank", type=float, default=0.0, help="weight of the pairwise ranking loss")
    p.add_argument("--w-corr", type=float, default=0.0, help="weight of 1 - PLCC")
    p.add_argument("--margin", type=float, default=0.1, help="ranking margin in units of the score scale")
    p.add_argument("--targets", choices=["base", "human"], default="base",
                   help="score targets: the frozen model's clean scores, or human scores (same scale as the model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=50)
    p.add_argument("--epoch-steps", type=int, default=None, help="steps per epoch (default: one pass over the images)")
    p.add_argument("--val-every", type=int, default=1, help="validate every this many epochs")
    p.add_argument("--val-n", type=int, default=16, help="noise samples per validation image")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt, train_log.csv, val_log.csv, denoiser.pt")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--init", default=None, help="start from this denoiser file (same --arch/--arch-config)")
    p.add_argument("--keep-validated", action="store_true",
                   help="also keep the weights of every validation as OUT/denoiser_step<STEP>.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if len(args.sigma) not in (1, 2):
        raise SystemExit("train.py: error: --sigma takes one value or MIN MAX.")
    try:
        config = TrainConfig(
            sigma=args.sigma[0] if len(args.sigma) == 1 else (args.sigma[0], args.sigma[1]),
            steps=args.steps, arch=args.arch, arch_config=json.loads(args.arch_config), batch_size=args.batch_size,
            crop=args.crop, lr=args.lr,
            weights=LossWeights(mse=args.w_mse, fidelity=args.w_fidelity, rank=args.w_rank, corr=args.w_corr,
                                margin=args.margin),
            targets=args.targets, seed=args.seed, checkpoint_every=args.checkpoint_every,
            epoch_steps=args.epoch_steps, val_every=args.val_every, val_n=args.val_n, init=args.init,
            lr_schedule=args.lr_schedule,
        )
        model = load_model_from_args(args)
        images = load_images(args.data, resize=args.resize, include=args.include)
        val = load_images(args.val_data, resize=args.val_resize or None, include=args.val_include) if args.val_data else []
        result = train_denoiser(model, images, config, args.out, val_images=val, resume=args.resume, device=device,
                                progress=not args.quiet, meta={"base_model": model_spec(args)},
                                keep_validated=args.keep_validated)
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise SystemExit(f"train.py: error: {err}") from None
    print(f"trained {result.step} steps; wrote {Path(args.out) / 'denoiser.pt'}")
    if result.best_validation is not None:
        best = result.best_validation
        print(f"best validation SROCC {best['srocc_base']:.4f} at step {int(best['step'])}: "
              f"{Path(args.out) / 'denoiser_best.pt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
