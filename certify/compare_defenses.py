"""Compare defenses of a model (CNNIQA-LIVE by default, any --model SPEC) side by side: the
base model, an NT-fine-tuned model, seven input purifications
(certiqa.defenses.default_purifications), median smoothing, and median smoothing with a
denoiser; white-box (adaptive: BPDA/EOT), black-box (Square) and transferred attacks; both
objectives (scores kept under attack, image kept).

Writes OUT/table.md (the summary ranking both objectives, then every row),
OUT/results.csv and (with matplotlib) OUT/plot.png.

CPU setting (the defaults: all 93 images of the shared data, shorter side 96; see the README):
    python certify/compare_defenses.py --nt-weights runs/nt-cnniqa-live/model.pt --denoiser DENOISER.pt --out runs/compare
GPU setting:
    python certify/compare_defenses.py --full --device cuda --nt-weights ... --denoiser ... --out runs/compare-full
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from certiqa import SmoothedIQA  # noqa: E402
from certiqa.comparison import (  # noqa: E402
    ATTACK_NORMS,
    ComparisonConfig,
    Defense,
    format_markdown,
    format_summary,
    load_comparison_images,
    plot_comparison,
    run_comparison,
)
from certiqa.defenses import Purified, default_purifications  # noqa: E402
from certiqa.options import (  # noqa: E402
    add_model_arguments,
    load_denoiser_from_args,
    load_model_from_args,
    require_metadata,
    resolve_device,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data", help="shared data folder")
    add_model_arguments(p, default=None, default_help="cnniqa:DATA/models/cnniqa-live.pt")  # the base model
    p.add_argument("--nt-model", metavar="SPEC", default=None, help="the NT-fine-tuned model (a model spec)")
    p.add_argument("--nt-weights", metavar="FILE", default=None,
                   help="short for --nt-model cnniqa:FILE (the model.pt of certify/train_nt.py)")
    p.add_argument("--full", action="store_true",
                   help="the GPU setting (every attack, n=10000, 20 steps, 16 EOT draws, 1000 queries)")
    p.add_argument("--images", type=int, default=None, help="use the first N images (default: all)")
    p.add_argument("--resize", type=int, default=96, help="shorter side of the images (96)")
    default = ComparisonConfig()
    p.add_argument("--sigma", type=float, default=None, help=f"smoothing noise ({default.sigma})")
    p.add_argument("--n", type=int, default=None, help=f"samples per certificate ({default.n})")
    p.add_argument("--n-eval", type=int, default=None, help=f"samples of the attacked smoothed median ({default.n_eval})")
    p.add_argument("--n-check", type=int, default=None, help=f"samples re-estimating it for soundness ({default.n_check})")
    p.add_argument("--alpha", type=float, default=None, help=f"certificate failure probability ({default.alpha})")
    p.add_argument("--steps", type=int, default=None, help=f"attack steps ({default.steps})")
    p.add_argument("--eot", type=int, default=None,
                   help=f"draws per white-box step on random purifications and smoothed models ({default.eot_samples})")
    p.add_argument("--queries", type=int, default=None,
                   help=f"Square attack queries per image and budget ({default.queries})")
    p.add_argument("--attacks", nargs="+", choices=sorted(ATTACK_NORMS), default=None,
                   help=f"attacks ({' '.join(default.attacks)}; --full: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--resume", action="store_true",
                   help="reuse the columns a stopped run of the same setting saved in OUT/columns")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    config = ComparisonConfig.full() if args.full else ComparisonConfig()
    overrides = {"sigma": args.sigma, "n": args.n, "n_eval": args.n_eval, "n_check": args.n_check,
                 "alpha": args.alpha, "steps": args.steps, "eot_samples": args.eot, "queries": args.queries,
                 "attacks": tuple(args.attacks) if args.attacks else None}
    if args.attacks:
        overrides["transfer_attacks"] = tuple(a for a in config.transfer_attacks if a in args.attacks)
    config = dataclasses.replace(config, seed=args.seed, **{k: v for k, v in overrides.items() if v is not None})
    try:
        config.check()
    except ValueError as err:
        p.error(str(err))
    if args.model is None and args.weights is None:
        args.model = f"cnniqa:{args.data / 'models' / 'cnniqa-live.pt'}"
    if args.nt_model is not None and args.nt_weights is not None:
        p.error("give --nt-model or --nt-weights, not both")
    nt_spec = args.nt_model or (f"cnniqa:{args.nt_weights}" if args.nt_weights is not None else None)
    base = load_model_from_args(args)
    require_metadata(args, base, "lower_better", "score_range")
    base = base.to(device)
    defenses = [Defense("base", model=base)]
    if nt_spec is not None:
        defenses.append(Defense("NT", model=load_model_from_args(args, spec=nt_spec).to(device)))
    defenses += [Defense(d.label, model=Purified(base, d)) for d in default_purifications(config.seed)]
    smoothing = dict(n=config.n, alpha=config.alpha, batch_size=config.batch_size, seed=config.seed)
    defenses.append(Defense("smoothing", smoothed=SmoothedIQA(base, config.sigma, **smoothing)))
    denoiser = load_denoiser_from_args(args, sigma=config.sigma)
    if denoiser is not None:
        denoiser = denoiser.to(device).eval()
        defenses.append(Defense("smoothing + denoiser", smoothed=SmoothedIQA(base, config.sigma, denoiser=denoiser, **smoothing)))

    images = load_comparison_images(args.data, args.images, args.resize)
    images = [dataclasses.replace(im, image=im.image.to(device)) for im in images]
    try:
        result = run_comparison(defenses, images, config, score_range=base.score_range,
                                lower_better=base.lower_better, progress=not args.quiet,
                                checkpoint=args.out / "columns", resume=args.resume)
    except ValueError as err:
        p.error(str(err))
    args.out.mkdir(parents=True, exist_ok=True)
    setting = (f"{len(images)} images (shorter side {args.resize}), sigma={config.sigma}, n={config.n}, "
               f"n_eval={config.n_eval}, n_check={config.n_check}, alpha={config.alpha}, "
               f"attacks={' '.join(config.attacks)}, transfer={' '.join(config.transfer_attacks)}, "
               f"steps={config.steps}, eot={config.eot_samples}, queries={config.queries} at linf "
               f"{'/'.join(f'{e * 255:g}' for e in config.square_budgets)}/255"
               f"{' (smoothed too)' if config.square_smoothed else ' (not on smoothed)'}, "
               f"check_images={config.check_images or 'all'}, "
               f"fidelity_draws={config.fidelity_draws}, seed={config.seed}, device={device.type}, threads={args.threads}")
    table = f"{format_summary(result)}\n\n{format_markdown(result)}"
    (args.out / "table.md").write_text(f"Setting: {setting}\n\n{table}\n")
    result.write_csv(args.out / "results.csv")
    try:
        plot_comparison(result, config, args.out / "plot.png")
    except ImportError as err:
        print(f"no plot: {err}", file=sys.stderr)
    print(f"Setting: {setting}\n\n{table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
