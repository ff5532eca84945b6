"""Wrap a model in median smoothing and certify one image (the README's Python example).

    python examples/quickstart.py [IMAGE] [--n 200]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from certiqa import SmoothedIQA  # noqa: E402
from certiqa.denoisers import pretrained  # noqa: E402
from certiqa.io import load_image  # noqa: E402
from certiqa.models import default_model  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", default=HERE / "images" / "chelsea_clean.png")
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()

    model = default_model()                       # any nn.Module: (B, C, H, W) in [0, 1] -> (B,)
    x = load_image(args.image).unsqueeze(0)       # (1, 3, H, W) float in [0, 1]
    with torch.no_grad():
        print(f"clean score: {float(model(x)):.2f} (higher is better: {not model.lower_better})")
    for denoiser in (None, pretrained(0.12)):     # the shipped denoiser for the default model at sigma 0.12
        smoothed = SmoothedIQA(model, sigma=0.12, n=args.n, alpha=0.001, seed=0, denoiser=denoiser)
        result = smoothed.certify(x, eps=0.05)    # holds for every l2 perturbation of norm <= 0.05
        (row,) = result.to_records()
        name = "plain smoothing  " if denoiser is None else "+ pretrained DnCNN"
        print(f"{name}: median {row['median']:.2f}, certified [{row['lower']:.2f}, {row['upper']:.2f}] "
              f"at eps 0.05 with probability >= 1 - {row['alpha']}")
        radius = float(smoothed.certified_radius(x, delta=2.0)[0])
        print(f"{'':18}  the score stays within +-2 for every eps < {radius:.3f}")


if __name__ == "__main__":
    main()
