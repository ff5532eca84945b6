"""Compare plain median smoothing with denoised smoothing for one base model.

For each configuration (plain, then each --denoiser NAME=PATH) it reports, on the images
of a manifest: SROCC / PLCC (logistic5) / KROCC of the smoothed median against the clean
base scores, the mean SROCC against the ladder scores (SSIM) within each LIVE ladder, and
the mean certified width at each eps.

With --bootstrap R (default 2000; 0 skips it) it also prints, for every pair of
configurations, the difference of their SROCC against the clean scores with a 95 %
paired bootstrap interval over the images.

Full setting (GPU):   --n 1000 (default), full-size images (no --resize).
CPU settings (README): --n 100 --resize 128 --threads 2, --n 64 --resize 96 --threads 1.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from certiqa import metrics  # noqa: E402
from certiqa.denoisers import load_denoiser  # noqa: E402
from certiqa.denoisers.evaluation import smoothed_records, summarise  # noqa: E402
from certiqa.denoisers.training import load_images  # noqa: E402
from certiqa.options import add_model_arguments, load_model_from_args, require_metadata, resolve_device  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    data = REPO.parent / "shared" / "data"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(data / "manifest.csv"), help="manifest CSV (default: %(default)s)")
    add_model_arguments(p, default=f"cnniqa:{data / 'models' / 'cnniqa-live.pt'}", denoiser=False)
    p.add_argument("--denoiser", action="append", default=[], metavar="NAME=PATH", help="a denoiser file to compare")
    p.add_argument("--sigma", type=float, default=0.12)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--eps", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    p.add_argument("--resize", type=int, default=None, help="shorter side of every image (default: full size)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images of the manifest")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--bootstrap", type=int, default=2000, metavar="R",
                   help="bootstrap resamples for the pairwise SROCC differences (0: skip)")
    p.add_argument("--out", default=None, help="write per-image rows (CSV) and the summary (OUT.json)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.bootstrap != 0 and args.bootstrap < 100:
        raise SystemExit(f"evaluate.py: error: --bootstrap must be 0 (skip) or >= 100, got {args.bootstrap}.")
    device = resolve_device(args.device)
    model = load_model_from_args(args)
    require_metadata(args, model, "lower_better")  # the ladder SROCC compares quality, not raw scores
    model = model.to(device)
    try:
        images = load_images(args.data, resize=args.resize, min_size=model.min_size)[: args.limit]
        configs = [("plain", None)]
        for item in args.denoiser:
            name, sep, path = item.partition("=")
            if not sep:
                raise ValueError(f"--denoiser takes NAME=PATH, got {item!r}.")
            configs.append((name, load_denoiser(path, device=device)))
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise SystemExit(f"evaluate.py: error: {err}") from None
    ladder_of = {}
    for im in images:
        m = re.match(r"images/ladders/(.+)_\d+\.\w+$", im.name)
        if m:
            ladder_of[im.name] = m.group(1)
    lower_better = model.lower_better
    summaries, all_rows = [], []
    for name, den in configs:
        t0 = time.perf_counter()
        rows = smoothed_records(model, images, args.sigma, args.n, args.alpha, args.eps, denoiser=den, seed=args.seed,
                                batch_size=args.batch_size, desc=name)
        summary = {"config": name, **summarise(rows, args.eps, ladder_of=ladder_of, lower_better=lower_better),
                   "seconds": round(time.perf_counter() - t0, 1)}
        summaries.append(summary)
        all_rows += [{"config": name, **r} for r in rows]
    setting = (f"sigma {args.sigma}, n {args.n}, alpha {args.alpha}, {len(images)} images, "
               f"resize {args.resize or 'none (full size)'}, noise seed {args.seed}")
    eps_cols = " | ".join(f"width eps {e:g}" for e in args.eps)
    print(f"\nSetting: {setting}\n")
    print(f"| config | SROCC | PLCC | KROCC | ladder SROCC ({summaries[0]['ladders']} ladders) | {eps_cols} |")
    print("|" + "---|" * (5 + len(args.eps)))
    for s in summaries:
        widths = " | ".join(f"{s[f'width_{e:g}']:.3f}" + ("" if s[f"certified_{e:g}"] == 1 else
                            f" ({100 * s[f'certified_{e:g}']:.0f}% cert.)") for e in args.eps)
        print(f"| {s['config']} | {s['srocc']:.4f} | {s['plcc']:.4f} | {s['krocc']:.4f} | {s['ladder_srocc']:.4f} | {widths} |")
    differences = []
    if args.bootstrap:
        print("\nDifferences of SROCC against the clean scores (95 % paired bootstrap interval over images):\n")
        by_name = {name: [r["median"] for r in all_rows if r["config"] == name] for name, _ in configs}
        clean = [r["clean"] for r in all_rows if r["config"] == configs[0][0]]
        for i, (first, _) in enumerate(configs):
            for second, _ in configs[i + 1:]:
                try:
                    diff, low, high = metrics.paired_difference(
                        metrics.srocc, by_name[second], by_name[first], clean, resamples=args.bootstrap, seed=args.seed
                    )
                except ValueError as err:
                    print(f"  {second} - {first}: not computed ({err})")
                    continue
                differences.append({"config": second, "minus": first, "srocc_difference": diff,
                                    "low": low, "high": high})
                print(f"  {second} - {first}: {diff:+.3f} ({low:+.3f} to {high:+.3f})")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(all_rows[0]))
            writer.writeheader()
            writer.writerows(all_rows)
        out.with_suffix(".json").write_text(json.dumps({"setting": setting, "summaries": summaries,
                                                          "srocc_differences": differences}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
