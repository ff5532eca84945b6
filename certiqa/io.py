"""Image files to tensors: (3, H, W) float32 in [0, 1].

Reads what Pillow reads (JPEG, PNG, BMP, TIFF, GIF, ...): 8- and 16-bit, grayscale
(replicated to three channels), palette images, and RGBA/LA (the alpha channel
is dropped, not composited). EXIF orientation is applied. Pillow reduces 16-bit
*colour* images to 8 bits per channel on reading; 16-bit grayscale keeps its
full precision. Of a file holding several frames (animated GIF, PNG or WebP,
multi-page TIFF) only the first frame is read; ``LoadedImage.frames`` says how
many the file holds, so callers can say so.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "ImageLoadError",
    "LoadedImage",
    "read_image",
    "load_image",
    "find_images",
    "resize_image",
    "downscale_longer_side",
    "file_sha256",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")
DEFAULT_MAX_PIXELS = 64_000_000  # about 770 MB as a float32 (3, H, W) tensor


class ImageLoadError(ValueError):
    """A file that cannot be used as an image; the message names the file."""


@dataclass(frozen=True)
class LoadedImage:
    """An image read from ``path``: ``image`` (3, H, W) in [0, 1]; ``original_size``
    (H, W) before any resizing, so callers can state it; ``frames``, the number of
    frames in the file (only the first is in ``image``)."""

    path: str
    image: torch.Tensor
    original_size: tuple[int, int]
    frames: int = 1

    @property
    def resized(self) -> bool:
        return tuple(self.image.shape[-2:]) != self.original_size


def _to_array(img: Image.Image, path: str) -> np.ndarray:
    """A Pillow image -> (H, W, 3) float32 array in [0, 1]."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageLoadError(f"{path}: 32-bit integer pixels outside 0..65535 are not supported.")
        gray = (arr / 65535.0).astype(np.float32)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        gray = np.asarray(img, dtype=np.float32)
        if not np.isfinite(gray).all() or gray.min() < 0 or gray.max() > 1:
            raise ImageLoadError(f"{path}: floating-point pixels must be finite and in [0, 1].")
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    rgb = img.convert("RGB")  # drops alpha; L, 1, P, CMYK, YCbCr, LAB ... all map to RGB
    return np.asarray(rgb, dtype=np.float32) / 255.0


def read_image(
    path: str | os.PathLike,
    *,
    min_size: int = 1,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    resize: int | tuple[int, int] | None = None,
) -> LoadedImage:
    """Read an image file.

    Args:
        path: the file.
        min_size: smallest allowed height and width (after resizing), e.g. a
            model's ``min_size``.
        max_pixels: refuse images with more pixels than this (None: no limit),
            checked from the header before decoding. This replaces Pillow's
            decompression-bomb warning; Pillow's hard limit (twice
            ``PIL.Image.MAX_IMAGE_PIXELS``) still applies and is reported as such.
        resize: None, an int (the shorter side becomes this, aspect kept) or
            (H, W); antialiased bilinear.

    Raises:
        ImageLoadError: unreadable (permission denied), not an image, truncated or corrupt, too small, too large.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ImageLoadError(f"{path}: no such file.")
    try:
        with warnings.catch_warnings():
            # max_pixels below is the limit; Pillow's warning threshold must not override it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if max_pixels is not None and width * height > max_pixels:
                    raise ImageLoadError(
                        f"{path}: {width}x{height} = {width * height} pixels exceeds max_pixels={max_pixels}; "
                        "resize it first or raise the limit."
                    )
                frames = int(getattr(img, "n_frames", 1))
                img.load()
                img = ImageOps.exif_transpose(img)
                arr = _to_array(img, path)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(f"{path}: not a readable image file.") from None
    except Image.DecompressionBombError as err:
        raise ImageLoadError(
            f"{path}: {err} Pillow refuses to decode it; raise PIL.Image.MAX_IMAGE_PIXELS to read it."
        ) from None
    except OSError as err:
        if err.errno is not None:  # the system refused the read (permission denied, I/O error), not a bad image
            raise ImageLoadError(f"{path}: cannot read the file: {(err.strerror or str(err)).lower()}; check that "
                                 "this user may read it.") from None
        raise ImageLoadError(f"{path}: cannot decode image ({err}); the file may be truncated or corrupt.") from None
    except (SyntaxError, ValueError) as err:
        raise ImageLoadError(f"{path}: cannot decode image ({err}); the file may be truncated or corrupt.") from None
    image = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).contiguous()
    original = (int(image.shape[1]), int(image.shape[2]))
    if resize is not None:
        image = resize_image(image, resize)
    h, w = image.shape[-2:]
    if h < min_size or w < min_size:
        raise ImageLoadError(f"{path}: {h}x{w} pixels is smaller than the {min_size}x{min_size} the model needs.")
    return LoadedImage(path=path, image=image, original_size=original, frames=frames)


def load_image(path: str | os.PathLike, **kwargs) -> torch.Tensor:
    """Read an image file as a (3, H, W) float32 tensor in [0, 1]; see :func:`read_image`."""
    return read_image(path, **kwargs).image


def resize_image(image: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize (C, H, W) or (B, C, H, W): an int sets the shorter side, a pair sets (H, W)."""
    if isinstance(size, int):
        if size < 1:
            raise ValueError(f"resize must be >= 1, got {size}.")
        h, w = image.shape[-2:]
        scale = size / min(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
    elif not (isinstance(size, Sequence) and len(size) == 2 and all(isinstance(s, int) and s >= 1 for s in size)):
        raise ValueError(f"resize must be an int or a pair of positive ints (H, W), got {size!r}.")
    batched = image if image.ndim == 4 else image.unsqueeze(0)
    out = F.interpolate(batched, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    out = out.clamp(0.0, 1.0)
    return out if image.ndim == 4 else out[0]


def downscale_longer_side(image: torch.Tensor, max_side: int) -> torch.Tensor:
    """(C, H, W) area-downscaled so that its longer side is ``max_side`` (aspect kept, sides
    rounded); returned unchanged when it is no longer than that."""
    if not (isinstance(max_side, int) and max_side >= 1):
        raise ValueError(f"max_side must be an int >= 1, got {max_side!r}.")
    scale = max_side / max(image.shape[-2:])
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[-2] * scale)), max(1, round(image.shape[-1] * scale)))
    return F.interpolate(image[None], size=size, mode="area")[0]


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_images(paths: Iterable[str | os.PathLike], *, recursive: bool = True) -> list[Path]:
    """Expand files and folders into image files (folders: by extension, sorted).

    Files named explicitly are kept whatever their extension, so that a bad file
    is reported rather than silently skipped. A path that does not exist raises
    FileNotFoundError.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            found.extend(
                sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            )
        elif path.exists():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder.")
    return found
