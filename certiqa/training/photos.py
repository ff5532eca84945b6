"""Redistributable training photographs for fine-tuning, by source name.

- ``skimage``: the scikit-image photographs of
  :data:`certiqa.models.default_training.TRAINING_PHOTOS` (public domain / CC0, in its wheel);
- ``debian``: the 31 training photographs of Debian's wallpaper packages
  (:mod:`certiqa.debian_photos`, fetched with ``apt-get download`` into a folder);
- any folder: its image files (searched recursively).

Every photograph is returned as (3, H, W) float32 in [0, 1], area-downscaled to a longer
side of at most 512 (as the other training sets)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from ..debian_photos import fetch_debian_photos, load_debian_photos, photo_names
from ..io import downscale_longer_side, find_images, read_image

__all__ = ["PHOTO_SOURCES", "load_photos"]

PHOTO_SOURCES = ("skimage", "debian")
MAX_SIDE = 512


def load_photos(
    sources: Sequence[str], *, debian_dir: str | os.PathLike, max_side: int = MAX_SIDE
) -> tuple[list[torch.Tensor], list[str]]:
    """The photographs of ``sources`` (``skimage``, ``debian`` or folders, in order) and their
    names. ``debian`` fetches the packages into ``debian_dir`` once (needs apt-get).

    Raises ValueError for a source that is neither a name of :data:`PHOTO_SOURCES` nor a
    folder, or a folder without images; RuntimeError when the Debian packages cannot be fetched."""
    photos: list[torch.Tensor] = []
    names: list[str] = []
    for source in sources:
        if source == "skimage":
            from ..models.default_training import TRAINING_PHOTOS, load_skimage_photos

            photos += load_skimage_photos(TRAINING_PHOTOS, max_side)
            names += [f"skimage:{n}" for n in TRAINING_PHOTOS]
        elif source == "debian":
            train = photo_names("train")
            photos += load_debian_photos(fetch_debian_photos(debian_dir), train, max_side)
            names += [f"debian:{n}" for n in train]
        elif Path(source).is_dir():
            paths = find_images([source])
            if not paths:
                raise ValueError(f"--photos {source}: the folder holds no image files; give a folder of photographs, "
                                 f"or one of {', '.join(PHOTO_SOURCES)}.")
            photos += [downscale_longer_side(read_image(p, max_pixels=None).image, max_side) for p in paths]
            names += [str(p) for p in paths]
        else:
            raise ValueError(f"--photos {source}: expected a folder of photographs or one of "
                             f"{', '.join(PHOTO_SOURCES)}; no such folder.")
    return photos, names
