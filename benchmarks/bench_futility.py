"""How often a futility test stops an image that fixed n would certify, where every image is borderline.

    python benchmarks/bench_futility.py [--futility power] [--thresholds 0.05 0.01 0.002]
        [--factors 0.9 0.95 1 1.05 1.1] [--trials 1000] [--n0 32] [--growth 1.25] [--spending final]

A closed-form setting with no model: each trial is one image whose n_max scores are i.i.d. standard
normal (seed --seed), all trials alike, so every image sits as close to delta as the others. Its
needed delta is that of the fixed-n certificate (n_max samples, the whole alpha); delta is a factor
times the trials' median need (1.0: about half of the trials certify at fixed n). For each threshold
(``futility_error``) and factor, ``certiqa.bounds.sequential_decisions`` replays the sequential
procedure on the same scores and the script prints, per cell, the trials that fixed n certifies and
the procedure stops as "futile" (out of those fixed n certifies), then the mean samples per trial at
factor 1. The "prediction" test bounds that fraction by its threshold; the "power" test does not,
and this is where it is measured.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from certiqa import bounds  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--futility", choices=("prediction", "power"), default="power")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.05, 0.01, 0.002])
    p.add_argument("--factors", type=float, nargs="+", default=[0.9, 0.95, 1.0, 1.05, 1.1],
                   help="delta as multiples of the trials' median needed delta")
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--sigma", type=float, default=0.12)
    p.add_argument("--eps", type=float, default=0.05)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--n-max", type=int, default=1000)
    p.add_argument("--n0", type=int, default=32)
    p.add_argument("--growth", type=float, default=1.25)
    p.add_argument("--spending", choices=bounds.SPENDING, default="final")
    p.add_argument("--seed", type=int, default=4)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    scores = np.random.default_rng(args.seed).standard_normal((args.trials, args.n_max))
    fixed_look = [bounds.single_look(args.n_max, args.sigma, args.eps, args.alpha)]
    fixed = bounds.sequential_decisions(scores, fixed_look, 0.0)  # delta moves the decision, not the interval
    need = np.maximum(fixed.median - fixed.lower, fixed.upper - fixed.median)
    median_need = float(np.median(need))
    print(f"{args.trials} trials of {args.n_max} standard normal scores, sigma {args.sigma}, eps {args.eps}, "
          f"alpha {args.alpha}; looks n0 {args.n0}, growth {args.growth:g}, {args.spending} spending, "
          f"futility {args.futility}; median needed delta {median_need:.4g}")
    print("| threshold | " + " | ".join(f"delta {f:g} x" for f in args.factors) + " | mean samples at 1 x |")
    print("|---" * (len(args.factors) + 2) + "|")
    for threshold in args.thresholds:
        looks = bounds.sequential_looks(args.n0, args.n_max, args.sigma, args.eps, args.alpha, args.spending,
                                        args.futility, threshold, args.growth)
        cells, mean_at_one = [], "-"
        for factor in args.factors:
            delta = factor * median_need
            certifies = need < delta
            outcome = bounds.sequential_decisions(scores, looks, delta)
            lost = int(((outcome.decision == bounds.FUTILE) & certifies).sum())
            share = f" ({100 * lost / certifies.sum():.0f} %)" if certifies.sum() else ""
            cells.append(f"{lost}/{int(certifies.sum())}{share}")
            if factor == 1.0:
                mean_at_one = f"{outcome.n_used.mean():.0f}"
        print(f"| {threshold:g} | " + " | ".join(cells) + f" | {mean_at_one} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
