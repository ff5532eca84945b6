"""Write the redistributable training photographs for the shipped denoisers to a folder.

    pip install '.[train]'   # scikit-image, for its public-domain / CC0 photographs
    python denoisers/make_training_photos.py runs/skimage_photos

The photographs the default model was trained on
(certiqa.models.default_training.TRAINING_PHOTOS), each clean and with three graded
synthetic distortions (certiqa.distortions, seeded), as PNG files, so that ranking
losses see crops of different quality.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from certiqa.distortions import DISTORTIONS, distort  # noqa: E402
from certiqa.models.default_training import TRAINING_PHOTOS, load_skimage_photos  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--versions", type=int, default=3, help="distorted versions per photograph")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(args.seed)
    names = sorted(DISTORTIONS)
    written = 0
    for name, photo in zip(TRAINING_PHOTOS, load_skimage_photos(TRAINING_PHOTOS)):
        versions = [("clean", photo)]
        for _ in range(args.versions):
            kind = names[int(torch.randint(len(names), (1,), generator=gen))]
            level = int(torch.randint(1, 6, (1,), generator=gen))
            versions.append((f"{kind}{level}", distort(photo.unsqueeze(0), kind, level, generator=gen)[0]))
        for tag, image in versions:
            arr = (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            Image.fromarray(arr).save(args.out / f"{name}_{tag}.png")
            written += 1
    print(f"wrote {written} images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
