"""Write redistributable training photographs for denoisers to a folder.

    pip install '.[train]'   # scikit-image, for its public-domain / CC0 photographs
    python denoisers/make_training_photos.py runs/skimage_photos
    python denoisers/make_training_photos.py runs/photos_grid \
        --grid gaussian_blur jpeg gaussian_noise pixelate quantize

By default: the photographs the default model was trained on
(certiqa.models.default_training.TRAINING_PHOTOS), each clean and with ``--versions`` randomly chosen
graded synthetic distortions (certiqa.distortions, seeded), as PNG files, so that
ranking losses see crops of different quality. With ``--grid KIND ...`` each photograph
gets every listed distortion at every level 1..5 instead, so that the clean scores of a
model span its whole quality range. ``--photos`` picks other scikit-image photographs
(e.g. the held-out certiqa.models.default_training.VALIDATION_PHOTOS chelsea and rocket;
``--photos`` with no name: none). ``--dead-leaves N`` adds N procedural dead-leaves images
(certiqa.dead_leaves, seeded; disk colours drawn from the photographs' pixels when there are
photographs), each distorted like the photographs:

    python denoisers/make_training_photos.py runs/photos_leaves --dead-leaves 40 \
        --grid gaussian_blur jpeg gaussian_noise pixelate quantize

``--debian DIR`` adds the photographs of Debian's wallpaper packages
(certiqa.debian_photos: 38 photographs under CC0 / CC-BY / CC-BY-SA / GPL / LGPL; fetched into
DIR with ``apt-get download`` and unpacked there, nothing installed), those of
``--debian-split`` (``train``: 31, ``val``: the 7 held out, ``all``):

    python denoisers/make_training_photos.py runs/photos_debian9 --debian runs/debian_photos \
        --grid gaussian_blur jpeg gaussian_noise pixelate quantize motion_blur contrast brightness saturation
    python denoisers/make_training_photos.py runs/photos_debian_val --photos chelsea rocket \
        --debian runs/debian_photos --debian-split val --grid gaussian_blur jpeg gaussian_noise pixelate quantize --seed 1
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

from certiqa.dead_leaves import dead_leaves  # noqa: E402
from certiqa.debian_photos import fetch_debian_photos, load_debian_photos, photo_names  # noqa: E402
from certiqa.distortions import DISTORTIONS, LEVELS, distort  # noqa: E402
from certiqa.models.default_training import TRAINING_PHOTOS, load_skimage_photos  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--photos", nargs="*", default=list(TRAINING_PHOTOS),
                        help="scikit-image photograph names (default: certiqa.models.default_training.TRAINING_PHOTOS)")
    parser.add_argument("--dead-leaves", type=int, default=0, metavar="N",
                        help="also write N dead-leaves images (certiqa.dead_leaves.dead_leaves)")
    parser.add_argument("--dead-leaves-size", type=int, nargs=2, default=(384, 512), metavar=("H", "W"),
                        help="their height and width (default: %(default)s)")
    parser.add_argument("--versions", type=int, default=3, help="randomly distorted versions per photograph")
    parser.add_argument("--grid", nargs="+", default=None, choices=sorted(DISTORTIONS), metavar="KIND",
                        help="every listed distortion at every level instead of --versions random ones")
    parser.add_argument("--debian", type=Path, default=None, metavar="DIR",
                        help="also the photographs of Debian's wallpaper packages (certiqa.debian_photos), "
                             "downloaded and unpacked into DIR")
    parser.add_argument("--debian-split", choices=("train", "val", "all"), default="train",
                        help="which of them (default: %(default)s; val = the held-out ones)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.dead_leaves < 0:
        parser.error(f"--dead-leaves must be >= 0, got {args.dead_leaves}.")
    if min(args.dead_leaves_size) < 1:
        parser.error(f"--dead-leaves-size must be positive, got {args.dead_leaves_size}.")
    if not args.photos and not args.dead_leaves and args.debian is None:
        parser.error("nothing to write: give --photos NAME ..., --debian DIR or --dead-leaves N.")
    names = list(args.photos)
    try:
        photos = load_skimage_photos(args.photos) if args.photos else []
        if args.debian is not None:
            debian = photo_names(args.debian_split)
            photos += load_debian_photos(fetch_debian_photos(args.debian), debian)
            names += debian
    except (ValueError, ImportError, RuntimeError, FileNotFoundError) as err:
        raise SystemExit(f"make_training_photos.py: error: {err}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(args.seed)
    kinds = sorted(DISTORTIONS)
    sources = list(zip(names, photos))
    if args.dead_leaves:
        leaves_gen = torch.Generator().manual_seed(args.seed + 1)  # the photographs' draws stay as they were
        palette = None
        if photos:
            pixels = torch.cat([p.flatten(1).T for p in photos])
            palette = pixels[torch.randint(len(pixels), (4096,), generator=leaves_gen)]
        height, width = args.dead_leaves_size
        for i in range(args.dead_leaves):
            sources.append((f"deadleaves{i:03d}", dead_leaves(height, width, palette=palette, generator=leaves_gen)))
    written = 0
    for name, photo in sources:
        versions = [("clean", photo)]
        for i in range(len(args.grid) * len(LEVELS) if args.grid else args.versions):
            if args.grid:
                kind, level = args.grid[i // len(LEVELS)], LEVELS[i % len(LEVELS)]
            else:  # kind, level and the distortion's own draws in this order, as the shipped runs used
                kind = kinds[int(torch.randint(len(kinds), (1,), generator=gen))]
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
