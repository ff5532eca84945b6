"""Compare plain median smoothing with denoised smoothing for one base model.

For each configuration (plain, then each --denoiser NAME=PATH) it reports, on the images
of a manifest:

- SROCC / PLCC (logistic5) / PLCC raw (no mapping) / KROCC of the smoothed median against
  the clean base scores, and the mean |median - clean| shift (score units), from --n
  samples per image;
- the mean SROCC against the ladder scores (SSIM) within each LIVE ladder
  (``images/ladders/<name>_<step>.<ext>``, medians oriented so that +1 is the right order);
- SROCC / PLCC (no mapping) against the human scores of the --human-include images
  (default images/labelled/), each mapped to a goodness in [0, 1] on its own scale;
- the mean certified width at each eps, from --width-n samples on --width-images images
  evenly spaced in the manifest's order (default: all images with --n samples).

``--student NAME=FILE`` adds a fine-tuned student (``certiqa finetune``) as a configuration:
the student is smoothed without a denoiser and compared with the --model's (its teacher's)
clean scores.

With --bootstrap R (default 2000; 0 skips it) it also prints, for every pair of
configurations, the differences of their SROCC / PLCC raw / KROCC against the clean
scores with 95 % paired bootstrap intervals over the images (PLCC raw: a logistic fit
per resample would take hours).

With --cache DIR every image's samples are kept in DIR/<config>/n<N>/ as they are drawn:
the same command, killed and run again, resumes where it stopped (and a run with more
images or configurations reuses what is there).

The issue-10 setting (CNNIQA-LIVE, full-size images, sigma 0.12, alpha 0.001):

    python denoisers/evaluate.py --n 64 --width-n 1000 --width-images 20 --threads 1 \\
        --denoiser mse=denoisers/weights/cnniqa_live_sigma0.12_mse.pt \\
        --denoiser rank=denoisers/weights/cnniqa_live_sigma0.12.pt \\
        --cache runs/eval_live/cache --out runs/eval_live/eval.csv
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
from certiqa.denoisers.evaluation import median_agreement, smoothed_records, summarise  # noqa: E402
from certiqa.denoisers.training import load_images  # noqa: E402
from certiqa.model_evaluation import evenly_spaced  # noqa: E402
from certiqa.models import load_model  # noqa: E402
from certiqa.options import add_model_arguments, load_model_from_args, require_metadata, resolve_device  # noqa: E402
from certiqa.sweep import read_human_scores  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    data = REPO.parent / "shared" / "data"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(data / "manifest.csv"), help="manifest CSV (default: %(default)s)")
    add_model_arguments(p, default=f"cnniqa:{data / 'models' / 'cnniqa-live.pt'}", denoiser=False)
    p.add_argument("--denoiser", action="append", default=[], metavar="NAME=PATH", help="a denoiser file to compare")
    p.add_argument("--student", action="append", default=[], metavar="NAME=FILE",
                   help="a student model file of the --model (certiqa finetune), scored against its clean scores")
    p.add_argument("--sigma", type=float, default=0.12)
    p.add_argument("--n", type=int, default=1000, help="samples per image for the correlation columns")
    p.add_argument("--width-n", type=int, default=None, help="samples per image for the widths (default: --n)")
    p.add_argument("--width-images", type=int, default=None,
                   help="certify this many images, evenly spaced in the manifest (default: all)")
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--eps", type=float, nargs="+", default=[0.02, 0.05, 0.1])
    p.add_argument("--human-include", nargs="*", default=["images/labelled"],
                   help="manifest rows whose score is a human score (default: %(default)s)")
    p.add_argument("--resize", type=int, default=None, help="shorter side of every image (default: full size)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images of the manifest")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--no-plain", action="store_true",
                   help="skip plain smoothing (e.g. to add one denoiser to a cached evaluation)")
    p.add_argument("--width-batch-size", type=int, default=None,
                   help="noisy copies per model call for the widths (default: --batch-size); on a CPU, large "
                        "images often run faster in small batches")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--bootstrap", type=int, default=2000, metavar="R",
                   help="bootstrap resamples for the pairwise differences (0: skip)")
    p.add_argument("--cache", default=None, metavar="DIR", help="keep samples per image and config here (resumable)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", default=None, help="write per-image rows (CSV) and the summary (OUT.json)")
    return p


def _plcc_raw(pred, target) -> float:
    return metrics.plcc(pred, target, mapping="none")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.bootstrap != 0 and args.bootstrap < 100:
        raise SystemExit(f"evaluate.py: error: --bootstrap must be 0 (skip) or >= 100, got {args.bootstrap}.")
    if args.width_images is not None and args.width_images < 1:
        raise SystemExit(f"evaluate.py: error: --width-images must be >= 1, got {args.width_images}.")
    if args.width_batch_size is not None and args.width_batch_size < 1:
        raise SystemExit(f"evaluate.py: error: --width-batch-size must be >= 1, got {args.width_batch_size}.")
    device = resolve_device(args.device)
    width_n = args.width_n or args.n
    width_batch_size = args.width_batch_size or args.batch_size
    model = load_model_from_args(args)
    require_metadata(args, model, "lower_better")  # the ladder SROCC compares quality, not raw scores
    model = model.to(device)
    try:
        images = load_images(args.data, resize=args.resize, min_size=model.min_size)[: args.limit]
        human = read_human_scores(args.data, args.human_include) if args.data.endswith(".csv") else {}
        configs = [("plain", None, None)]  # (name, denoiser, student)
        for flag, items in (("--denoiser", args.denoiser), ("--student", args.student)):
            for item in items:
                name, sep, path = item.partition("=")
                if not sep or not re.fullmatch(r"[A-Za-z0-9._+-]+", name) or name in [c[0] for c in configs]:
                    raise ValueError(f"{flag} takes NAME=PATH with a new NAME of letters, digits, . _ + - other "
                                     f"than 'plain', got {item!r}.")
                if flag == "--denoiser":
                    configs.append((name, load_denoiser(path, device=device), None))
                else:
                    configs.append((name, None, load_model(path).to(device)))
        if args.no_plain:
            if len(configs) == 1:
                raise ValueError("--no-plain leaves nothing to evaluate: add a --denoiser or --student NAME=PATH.")
            configs = configs[1:]
    except (ValueError, TypeError, FileNotFoundError) as err:
        raise SystemExit(f"evaluate.py: error: {err}") from None
    ladder_of = {}
    for im in images:
        m = re.match(r"images/ladders/(.+)_\d+\.\w+$", im.name)
        if m:
            ladder_of[im.name] = m.group(1)
    width_images = [images[i] for i in evenly_spaced(len(images), args.width_images)]
    separate_widths = width_n != args.n or len(width_images) != len(images) or width_batch_size != args.batch_size
    lower_better = model.lower_better
    summaries, all_rows = [], []
    for name, den, student in configs:
        t0 = time.perf_counter()

        def records(subset, n, batch_size):
            cache = Path(args.cache) / name / f"n{n}" if args.cache else None
            if cache is not None and batch_size != args.batch_size:
                cache = cache.with_name(f"n{n}_b{batch_size}")  # the noise depends on the batch size
            smoothed_model, reference = (model, None) if student is None else (student, model)
            return smoothed_records(smoothed_model, subset, args.sigma, n, args.alpha, args.eps, denoiser=den,
                                    reference=reference, seed=args.seed, batch_size=batch_size, cache_dir=cache,
                                    progress=not args.quiet, desc=f"{name} n={n}")

        rows = records(images, args.n, args.batch_size)
        summary = {"config": name, **summarise(rows, args.eps, ladder_of=ladder_of, human=human, lower_better=lower_better)}
        if separate_widths:
            width_rows = records(width_images, width_n, width_batch_size)
            widths = summarise(width_rows, args.eps, lower_better=lower_better)
            summary.update({k: v for k, v in widths.items() if k.startswith(("width_", "certified_"))})
            if width_n != args.n:
                summary["median_agreement"] = median_agreement(rows, width_rows)
            all_rows += [{"config": name, "n": width_n, **r} for r in width_rows]
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        summaries.append(summary)
        all_rows += [{"config": name, "n": args.n, **r} for r in rows]
        print(f"{name}: done in {summary['seconds']} s", flush=True)
    setting = (f"sigma {args.sigma}, alpha {args.alpha}, {len(images)} images at "
               f"{'full size' if args.resize is None else f'shorter side {args.resize}'}, n {args.n} for the "
               f"correlations and the shift, widths from n {width_n} on {len(width_images)} images, noise seed {args.seed}")
    eps_cols = " | ".join(f"width eps {e:g}" for e in args.eps)
    print(f"\nSetting: {setting}\n")
    print(f"| config | SROCC | PLCC | PLCC raw | KROCC | ladder SROCC ({summaries[0]['ladders']} ladders) | "
          f"human SROCC ({summaries[0]['human_images']} images) | mean shift | {eps_cols} |")
    print("|" + "---|" * (8 + len(args.eps)))
    for s in summaries:
        widths = " | ".join(f"{s[f'width_{e:g}']:.3f}" + ("" if s[f"certified_{e:g}"] == 1 else
                            f" ({100 * s[f'certified_{e:g}']:.0f}% cert.)") for e in args.eps)
        cells = [s["srocc"], s["plcc"], s["plcc_raw"], s["krocc"], s["ladder_srocc"], s["srocc_human"]]
        print(f"| {s['config']} | " + " | ".join(f"{c:.4f}" for c in cells) + f" | {s['shift']:.3f} | {widths} |")
    if any("median_agreement" in s for s in summaries):
        print(f"\nMedians at n {args.n} against n {width_n} on the {len(width_images)} width images (is n {args.n} "
              f"enough for the correlation columns?):\n")
        print(f"| config | SROCC n {args.n} vs n {width_n} | mean abs difference | max abs difference | "
              f"SROCC vs clean, n {args.n} | SROCC vs clean, n {width_n} |")
        print("|---|---|---|---|---|---|")
        for s in summaries:
            a = s["median_agreement"]
            print(f"| {s['config']} | {a['srocc_between']:.4f} | {a['mean_abs_difference']:.4f} | "
                  f"{a['max_abs_difference']:.4f} | {a['srocc']:.4f} | {a['srocc_reference']:.4f} |")
    differences = []
    if args.bootstrap:
        print("\nDifferences against the clean scores (95 % paired bootstrap interval over images):\n")
        main_rows = [r for r in all_rows if r["n"] == args.n]
        by_name = {name: [r["median"] for r in main_rows if r["config"] == name] for name, *_ in configs}
        clean = [r["clean"] for r in main_rows if r["config"] == configs[0][0]]
        for i, (first, *_) in enumerate(configs):
            for second, *_ in configs[i + 1:]:
                for label, metric in (("SROCC", metrics.srocc), ("PLCC raw", _plcc_raw), ("KROCC", metrics.krocc)):
                    try:
                        diff, low, high = metrics.paired_difference(
                            metric, by_name[second], by_name[first], clean, resamples=args.bootstrap, seed=args.seed
                        )
                    except ValueError as err:
                        print(f"  {label} {second} - {first}: not computed ({err})")
                        continue
                    differences.append({"metric": label, "config": second, "minus": first,
                                        "difference": diff, "low": low, "high": high})
                    print(f"  {label} {second} - {first}: {diff:+.3f} ({low:+.3f} to {high:+.3f})")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(all_rows[0]))
            writer.writeheader()
            writer.writerows(all_rows)
        out.with_suffix(".json").write_text(json.dumps({"setting": setting, "summaries": summaries,
                                                        "differences": differences}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
