"""SROCC/PLCC of the default model and of CNNIQA-LIVE on the real images of the shared data.

    python examples/evaluate_models.py [--data ../shared/data] [--weights FILE]
    python examples/evaluate_models.py --sigma 0.12 --n 32 --denoiser pretrained   # + the defended default model

Prints a markdown table; see certiqa.model_evaluation for what each column measures. With
--sigma, rows for the smoothed median (n noisy copies, noise seed --seed) of the default
model follow, with and without the denoiser, and the spread of the smoothed medians of
the ladder images against their clean scores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from certiqa import SmoothedIQA  # noqa: E402
from certiqa.denoisers import load_denoiser, pretrained  # noqa: E402
from certiqa.model_evaluation import EvaluationResult, evaluate_model, markdown_table  # noqa: E402
from certiqa.metrics import srocc  # noqa: E402
from certiqa.models import CNNIQA, default_model  # noqa: E402


def spread(name: str, result: EvaluationResult, clean: EvaluationResult) -> str:
    """One line: range and standard deviation of the ladder scores, and their SROCC with the clean ones."""
    values, reference = np.asarray(result.ladder_goodness), np.asarray(clean.ladder_goodness)
    return (f"{name}: ladder images scored {values.min():.1f} .. {values.max():.1f} (sd {values.std():.1f}; "
            f"clean {reference.min():.1f} .. {reference.max():.1f}, sd {reference.std():.1f}); "
            f"SROCC against the clean scores {srocc(values, reference):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--weights", type=Path, default=None,
                        help="CNNIQA-LIVE state dict (default: DATA/models/cnniqa-live.pt)")
    parser.add_argument("--sigma", type=float, default=None, help="also evaluate the smoothed default model")
    parser.add_argument("--n", type=int, default=32, help="noisy copies per image for --sigma (32)")
    parser.add_argument("--denoiser", default="pretrained",
                        help="denoiser for --sigma: 'pretrained' (the shipped one) or a denoiser file")
    parser.add_argument("--seed", type=int, default=0, help="noise seed for --sigma (0)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = default_model()
    progress = not args.quiet
    results = {
        "certiqa default_model()": evaluate_model(model, args.data, progress=progress),
        "CNNIQA-LIVE (published weights)": evaluate_model(
            CNNIQA.from_file(args.weights or args.data / "models" / "cnniqa-live.pt"), args.data, progress=progress
        ),
    }
    lines = []
    if args.sigma is not None:
        denoiser = pretrained(args.sigma) if args.denoiser == "pretrained" else load_denoiser(args.denoiser)
        for name, den in ((f"default_model() smoothed, sigma {args.sigma:g}, n {args.n}", None),
                          (f"default_model() smoothed + {args.denoiser} denoiser, sigma {args.sigma:g}, n {args.n}",
                           denoiser)):
            smoothed = SmoothedIQA(model, args.sigma, n=args.n, denoiser=den, seed=args.seed)
            results[name] = evaluate_model(smoothed, args.data, lower_better=False, progress=progress)
            lines.append(spread(name, results[name], results["certiqa default_model()"]))
    print(markdown_table(results))
    for line in lines:
        print(line)


if __name__ == "__main__":
    main()
