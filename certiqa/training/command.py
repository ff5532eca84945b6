"""``certiqa finetune``: fine-tune a model under noise and write the student file."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from ..distortions import DISTORTIONS
from ..options import add_model_arguments, describe_model, load_model_from_args, resolve_device
from .finetune import FinetuneConfig, finetune, save_student
from .photos import PHOTO_SOURCES, load_photos

__all__ = ["add_finetune_parser"]

_DEFAULTS = FinetuneConfig()


def _debian_default() -> str:
    return str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "certiqa" / "debian_photos")


def _finetune(args: argparse.Namespace) -> int:
    fail = "certiqa finetune: error: "
    if args.out is None:
        raise SystemExit(f"{fail}--out FILE is required (the student model file to write).")
    work = Path(args.work) if args.work else Path(args.out + ".train")
    if args.resume and not (work / "checkpoint.pt").is_file():
        raise SystemExit(f"{fail}--resume found no checkpoint {work / 'checkpoint.pt'}; run without --resume first.")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        config = FinetuneConfig(
            sigma=args.sigma, steps=args.steps, batch_size=args.batch_size, crop=args.crop, draws=args.draws,
            lr=args.lr, lr_schedule=args.lr_schedule, fidelity=args.fidelity, w_fidelity=args.w_fidelity,
            w_rank=args.w_rank, margin=args.margin, w_consistency=args.w_consistency, w_clean=args.w_clean,
            distortions=tuple(args.distortions), p_clean=args.p_clean, seed=args.seed,
            checkpoint_every=args.checkpoint_every,
        )
        device = resolve_device(args.device)
        teacher = load_model_from_args(args)
        describe_model(teacher)  # the teacher's file must be hashable before any work
        photos, _ = load_photos(args.photos, debian_dir=args.debian_dir)
        result = finetune(teacher, photos, config, work, resume=args.resume, device=device,
                          progress=not args.quiet)
        path = save_student(result.student.cpu(), args.out, teacher=teacher, config=config, steps=result.step,
                            photos=args.photos)
    except (ValueError, RuntimeError, FileNotFoundError, ImportError) as err:
        raise SystemExit(f"{fail}{str(err).strip().splitlines()[0]}") from None
    print(f"wrote {path} ({result.step} steps; checkpoint and log in {work}); certify it with --model {path}",
          file=sys.stderr)
    return 0


def add_finetune_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``finetune`` subcommand on the ``certiqa`` parser's subparsers."""
    p = sub.add_parser(
        "finetune",
        help="fine-tune a model under the smoothing noise (a student of the frozen original)",
        description="Fine-tune a differentiable NR-IQA model so that its scores of noisy images agree with the "
                    "frozen original's scores of the clean images (fidelity + ranking + consistency across noise "
                    "draws). The smoothed student is a new metric; its file records the teacher and the recipe.",
    )
    add_model_arguments(p, denoiser=False)
    p.add_argument("--photos", action="append", required=True, metavar="DIR|" + "|".join(PHOTO_SOURCES),
                   help="training photographs (repeatable): a folder, 'skimage' (scikit-image's free photographs) "
                        "or 'debian' (Debian's wallpaper photographs, fetched with apt-get download). Use "
                        "redistributable photographs, never the images you evaluate on")
    p.add_argument("--debian-dir", default=_debian_default(), metavar="DIR",
                   help="where --photos debian keeps the packages (%(default)s)")
    p.add_argument("--out", metavar="FILE", help="the student model file to write (loads with --model FILE)")
    p.add_argument("--work", metavar="DIR", help="checkpoint and train_log.csv (default: OUT.train)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --work (same options)")
    p.add_argument("--sigma", type=float, default=_DEFAULTS.sigma, help="noise level to train for (%(default)s)")
    p.add_argument("--steps", type=int, default=_DEFAULTS.steps, help="optimizer steps (%(default)s)")
    p.add_argument("--batch-size", type=int, default=_DEFAULTS.batch_size, help="crops per step (%(default)s)")
    p.add_argument("--crop", type=int, default=_DEFAULTS.crop, help="crop side in pixels (%(default)s)")
    p.add_argument("--draws", type=int, default=_DEFAULTS.draws, help="noise draws per crop (%(default)s)")
    p.add_argument("--lr", type=float, default=_DEFAULTS.lr, help="Adam learning rate (%(default)s)")
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default=_DEFAULTS.lr_schedule)
    p.add_argument("--fidelity", choices=("mse", "l1"), default=_DEFAULTS.fidelity,
                   help="fidelity to the teacher's clean score (%(default)s)")
    p.add_argument("--w-fidelity", type=float, default=_DEFAULTS.w_fidelity, help="(%(default)s)")
    p.add_argument("--w-rank", type=float, default=_DEFAULTS.w_rank, help="pairwise ranking hinge (%(default)s)")
    p.add_argument("--margin", type=float, default=_DEFAULTS.margin,
                   help="ranking margin in units of the teacher's score spread (%(default)s)")
    p.add_argument("--w-consistency", type=float, default=_DEFAULTS.w_consistency,
                   help="variance of a crop's scores across noise draws (%(default)s)")
    p.add_argument("--w-clean", type=float, default=_DEFAULTS.w_clean,
                   help="fidelity of the student's noise-free scores (%(default)s)")
    p.add_argument("--distortions", nargs="*", default=list(_DEFAULTS.distortions), metavar="KIND",
                   help=f"synthetic distortions at random levels ({', '.join(sorted(DISTORTIONS))}; default all)")
    p.add_argument("--p-clean", type=float, default=_DEFAULTS.p_clean,
                   help="probability that a crop stays undistorted (%(default)s)")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="(%(default)s)")
    p.add_argument("--checkpoint-every", type=int, default=_DEFAULTS.checkpoint_every, help="steps (%(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_finetune)
