"""Write the small example images of examples/images/ from scikit-image's free photographs.

    python examples/make_example_images.py [--out examples/images]

Each photograph is downscaled (area) to 256x192 (landscape) and, except the clean
one, distorted with certiqa.distortions (fixed seed). Needs scikit-image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from certiqa.distortions import distort  # noqa: E402
from certiqa.models.default_training import load_skimage_photos  # noqa: E402

# file name -> (skimage.data photograph, distortion or None, level)
EXAMPLES = {
    "chelsea_clean.png": ("chelsea", None, 0),
    "coffee_blur3.png": ("coffee", "gaussian_blur", 3),
    "astronaut_motion3.png": ("astronaut", "motion_blur", 3),
    "rocket_jpeg4.png": ("rocket", "jpeg", 4),
}
SIZE = (192, 256)  # (H, W)


def _fit(x: torch.Tensor) -> torch.Tensor:
    """Centre-crop (3, H, W) to the 4:3 aspect of SIZE, then area-downscale to SIZE."""
    h, w = x.shape[1:]
    ch, cw = min(h, w * SIZE[0] // SIZE[1]), min(w, h * SIZE[1] // SIZE[0])
    top, left = (h - ch) // 2, (w - cw) // 2
    return F.interpolate(x[None, :, top : top + ch, left : left + cw], size=SIZE, mode="area")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for i, (name, (photo, distortion, level)) in enumerate(EXAMPLES.items()):
        x = _fit(load_skimage_photos([photo], max_side=10_000)[0])
        if distortion is not None:
            x = distort(x, distortion, level, generator=i)
        arr = (x[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        path = args.out / name
        Image.fromarray(np.ascontiguousarray(arr)).save(path, optimize=True)
        print(f"{path} ({path.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
