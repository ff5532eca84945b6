"""SROCC/PLCC of the default model and of CNNIQA-LIVE on the real images of the shared data.

    python examples/evaluate_models.py [--data ../shared/data] [--weights FILE]

Prints a markdown table; see certiqa.evaluation for what each column measures.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from certiqa.evaluation import evaluate_model, markdown_table
from certiqa.models import CNNIQA, default_model

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--weights", type=Path, default=None,
                        help="CNNIQA-LIVE state dict (default: DATA/models/cnniqa-live.pt)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = {
        "certiqa default_model() (CNNIQA, synthetic SSIM labels)": default_model(),
        "CNNIQA-LIVE (published weights)": CNNIQA.from_file(args.weights or args.data / "models" / "cnniqa-live.pt"),
    }
    results = {name: evaluate_model(model, args.data, progress=not args.quiet) for name, model in models.items()}
    print(markdown_table(results))


if __name__ == "__main__":
    main()
