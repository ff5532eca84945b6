"""Fine-tune (or train) an NR-IQA model with NT (norm regularisation, Liu et al. CVPR 2024).

The model is CNNIQA-LIVE by default, or any --model SPEC that gives an nn.Module with
trainable parameters (cnniqa:FILE, a TorchScript archive, module:factory(...), pyiqa:NAME);
OUT/model.pt is its state dict (reload a CNNIQA one with --model cnniqa:OUT/model.pt).

Without --labels: fine-tuning that keeps the pretrained model's own clean scores
(L_IQA = |f(x) - f0(x)|) on random crops of the images. With --labels FILE.csv
(columns file,score; scores on the model's scale): training on those scores.

Example (the run measured in the README):
    python certify/train_nt.py --out runs/nt-cnniqa-live --steps 500
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from certiqa.defenses import nt  # noqa: E402
from certiqa.io import find_images, load_image  # noqa: E402
from certiqa.options import add_model_arguments, load_model_from_args, resolve_device  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="shared data folder")
    p.add_argument("--images", nargs="+", default=["images/ladders", "images/reference"],
                   help="image files/folders, relative to --data unless absolute (default: the LIVE ladders and "
                        "references, disjoint from the comparison's images)")
    add_model_arguments(p, default=None, default_help="cnniqa:DATA/models/cnniqa-live.pt", denoiser=False)
    p.add_argument("--labels", type=Path, default=None, help="CSV file,score: train on these scores instead")
    p.add_argument("--out", type=Path, required=True, help="output folder (checkpoint.pt, log.jsonl, model.pt)")
    p.add_argument("--resize", type=int, default=256, help="shorter side of the loaded images (256)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--h", type=float, default=nt.NT_H, help=f"finite-difference step ({nt.NT_H}, published)")
    p.add_argument("--lam", type=float, default=nt.NT_LAMBDA, help=f"regulariser weight ({nt.NT_LAMBDA}, published)")
    p.add_argument("--pixel-units", action="store_true",
                   help="--h/--lam are already for [0, 1] pixels; by default they are the published values for "
                        "ImageNet-normalised inputs and are converted (h*0.226, lam*0.226^2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.model is None and args.weights is None:
        args.model = f"cnniqa:{args.data / 'models' / 'cnniqa-live.pt'}"
    try:
        model = load_model_from_args(args).trainable()
    except ValueError as err:
        p.error(f"NT trains the model's parameters: {err}")
    h, lam = (args.h, args.lam) if args.pixel_units else nt.pixel_equivalent(args.h, args.lam)
    paths = find_images([p if Path(p).is_absolute() else args.data / p for p in args.images])
    if not paths:
        p.error("no training images found")
    targets = None
    if args.labels is not None:
        with open(args.labels, newline="") as f:
            scores = {Path(r["file"]).name: float(r["score"]) for r in csv.DictReader(f)}
        paths = [q for q in paths if q.name in scores]
        if not paths:
            p.error(f"no image in --images is named in {args.labels}")
        targets = [scores[q.name] for q in paths]
    images = [load_image(q, resize=args.resize) for q in paths]
    before = nt.input_gradient_norm(model, torch.stack([im[:, : args.crop, : args.crop] for im in images[:16]]))
    config = nt.NTConfig(steps=args.steps, batch_size=args.batch_size, crop=args.crop, lr=args.lr, h=h, lam=lam,
                         seed=args.seed)
    print(f"NT on {len(images)} images, {'labels' if targets else 'self-distillation'}; h={h:.4g}, lam={lam:.4g} "
          f"([0,1]-pixel units), device={device.type}", file=sys.stderr)
    model = nt.train_nt(model, images, config, targets=targets, out_dir=args.out, resume=not args.no_resume,
                        device=device, progress=not args.quiet).cpu()
    after = nt.input_gradient_norm(model, torch.stack([im[:, : args.crop, : args.crop] for im in images[:16]]))
    print(f"median ||grad_x f||_1 on {before.numel()} crops: {before.median():.4g} -> {after.median():.4g}; "
          f"wrote {args.out / 'model.pt'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
