"""Redistributable photographs from Debian's wallpaper packages, for training denoisers.

The scikit-image photographs that ship in its wheel are ten; Debian's archive carries
38 more real photographs (nature, people, objects, architecture) in its wallpaper
packages, each under a licence that allows reuse (CC0, CC-BY, CC-BY-SA, GPL-2+,
LGPL-3), as each package's ``copyright`` file and metadata state. :data:`CATALOGUE`
names each one: package, path inside the package, author, licence, and whether it is
held out for validation (every fifth entry).

:func:`fetch_debian_photos` downloads the packages with ``apt-get download`` (no root
needed, but current package lists: ``apt-get update`` as root once) and unpacks them with
``dpkg-deb -x``; nothing is installed. :func:`load_debian_photos` reads the photographs
back, area-downscaled to a longer side of 512 like
:func:`certiqa.models.default_training.load_skimage_photos`. None of these images is
part of certiqa or of ``../shared/data``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .io import downscale_longer_side, read_image

__all__ = ["DebianPhoto", "CATALOGUE", "photo_names", "fetch_debian_photos", "load_debian_photos"]

_MAX_SIDE = 512


@dataclass(frozen=True)
class DebianPhoto:
    """One photograph: its name here, Debian package, path inside the package, author, licence."""

    name: str
    package: str
    path: str
    author: str
    licence: str
    validation: bool = False


def _lomiri(file: str, author: str, licence: str, folder: str = "16.04") -> tuple[str, str, str, str]:
    return (f"lomiri-wallpapers-{folder}", f"usr/share/backgrounds/{file}", author, licence)


def _plasma(name: str, size: str, author: str) -> tuple[str, str, str, str]:
    return ("plasma-workspace-wallpapers", f"usr/share/wallpapers/{name}/contents/images/{size}.jpg", author, "LGPL-3")


def _mate(file: str, author: str) -> tuple[str, str, str, str]:
    return ("mate-backgrounds", f"usr/share/backgrounds/mate/nature/{file}", author, "GPL-2+")


_ENTRIES: tuple[tuple[str, tuple[str, str, str, str]], ...] = (
    ("bridge", _lomiri("Bridge_by_Sander_Klootwijk.jpg", "Sander Klootwijk", "CC-BY-SA-4.0")),
    ("dragonfly", _lomiri("Dragonfly_by_Bolly.jpg", "Bolly", "CC-BY-SA-4.0")),
    ("fig_plate", _lomiri("Picture_0B_by_freespace.jpg", "Trevor Freespace", "CC-BY-4.0")),
    ("pencils", _lomiri("Picture_1A_by_freespace.jpg", "Trevor Freespace", "CC-BY-4.0")),
    ("wine", _lomiri("Wine_by_Jakkub_Mede.jpg", "Jakub Mede", "CC-BY-4.0")),
    ("aitzgorri", _lomiri("aitzgorri_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0")),
    ("analog_pattern", _lomiri("analogpattern_by_Peter_Nerlich.jpg", "Peter Nerlich", "CC-BY-SA-4.0")),
    ("light_bulbs", _lomiri("free_by_Peter_Nerlich.jpg", "Peter Nerlich", "CC-BY-SA-4.0")),
    ("friends", _lomiri("friends_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0")),
    ("clock_face", _lomiri("greentock_by_Peter_Nerlich.jpg", "Peter Nerlich", "CC-BY-SA-4.0")),
    ("stream", _lomiri("life_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0")),
    ("picos", _lomiri("picosdeeuropa_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0")),
    ("dandelions", _lomiri("seeding_by_Clements_Engelhardt.jpg", "Clemens Engelhardt", "CC0-1.0")),
    ("sunset", _lomiri("sunset_by_Aitzol_Berasategi.jpg", "Aitzol Berasategi", "CC-BY-4.0")),
    ("bark", _lomiri("Kleiber_by_Lukas_Baubkus.jpg", "Lukas Baubkus", "CC-BY-SA-3.0", folder="20.04")),
    ("water_drop", _mate("Aqua.jpg", "Charles Barbin")),
    ("leaf_blinds", _mate("Blinds.jpg", "Lennart Poettering, Andrea Cimitan")),
    ("dune", _mate("Dune.jpg", "Marco Cogoni, Hylke Bons")),
    ("fresh_flower", _mate("FreshFlower.jpg", "Jens Ansorg")),
    ("garden", _mate("Garden.jpg", "Charles Barbin")),
    ("meadow", _mate("GreenMeadow.jpg", "Timothy Schellhase, Lapo Calamandrei")),
    ("ladybird", _mate("LadyBird.jpg", "Charles Barbin")),
    ("rain_drops", _mate("RainDrops.jpg", "blackcombwhistler07")),
    ("storm", _mate("Storm.jpg", "Sergey Nazarov")),
    ("two_wings", _mate("TwoWings.jpg", "Charles Barbin, Hylke Bons")),
    ("wood", _mate("Wood.jpg", "Jean-Francois Fortin Tam")),
    ("yellow_flower", _mate("YellowFlower.jpg", "Charles Barbin")),
    ("by_the_water", _plasma("BytheWater", "2560x1600", "Maciej Wiklo")),
    ("cold_ripple", _plasma("ColdRipple", "2560x1600", "Risto Saukonpaa")),
    ("colorful_cups", _plasma("ColorfulCups", "2560x1600", "Dmitri Popov")),
    ("darkest_hour", _plasma("DarkestHour", "2560x1600", "Risto Saukonpaa")),
    ("evening_glow", _plasma("EveningGlow", "2560x1600", "Ian Hex")),
    ("fallen_leaf", _plasma("FallenLeaf", "2560x1600", "Martin Klapetek")),
    ("grey", _plasma("Grey", "2560x1600", "Sigi Sagi")),
    ("kite", _plasma("Kite", "2560x1600", "Risto Saukonpaa")),
    ("one_stands_out", _plasma("OneStandsOut", "2560x1600", "Risto Saukonpaa")),
    ("path", _plasma("Path", "2560x1600", "Risto Saukonpaa")),
    ("summer_1am", _plasma("summer_1am", "2560x1600", "Risto Saukonpaa")),
)

#: Every photograph, in a fixed order; entries 4, 9, 14, ... (every fifth) are held out.
CATALOGUE: tuple[DebianPhoto, ...] = tuple(
    DebianPhoto(name, *entry, validation=i % 5 == 4) for i, (name, entry) in enumerate(_ENTRIES)
)


def photo_names(split: str = "all") -> list[str]:
    """Names of the ``"train"``, ``"val"`` (held out) or ``"all"`` photographs, catalogue order."""
    if split not in ("train", "val", "all"):
        raise ValueError(f"split must be 'train', 'val' or 'all', got {split!r}.")
    return [p.name for p in CATALOGUE if split == "all" or p.validation == (split == "val")]


def _entries(names: Sequence[str]) -> list[DebianPhoto]:
    by_name = {p.name: p for p in CATALOGUE}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown Debian photograph(s) {unknown}; choose from certiqa.debian_photos.photo_names().")
    return [by_name[n] for n in names]


def fetch_debian_photos(root: str | os.PathLike) -> Path:
    """Download and unpack the catalogue's packages under ``root`` (``root/debs``, ``root/<package>``);
    packages already unpacked are kept. Returns ``root``.

    Raises:
        RuntimeError: ``apt-get`` / ``dpkg-deb`` missing (not a Debian-based system) or a
            download failing (run ``apt-get update`` as root first)."""
    root = Path(root)
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} not found: fetching the Debian photographs needs a Debian or Ubuntu system.")
    debs = root / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    for package in sorted({p.package for p in CATALOGUE}):
        target = root / package
        if target.is_dir():
            continue
        done = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"apt-get download {package} failed (exit {done.returncode}): {done.stderr.strip()[-400:]}\n"
                "run 'apt-get update' as root so that the package lists are current."
            )
        deb = max(debs.glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime)
        tmp = root / f".{package}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        os.replace(tmp, target)
    return root


def load_debian_photos(
    root: str | os.PathLike, names: Sequence[str], max_side: int = _MAX_SIDE
) -> list[torch.Tensor]:
    """The named photographs from a :func:`fetch_debian_photos` folder as (3, H, W) float32 in
    [0, 1], area-downscaled so that the longer side is at most ``max_side``."""
    photos = []
    for entry in _entries(names):
        path = Path(root) / entry.package / entry.path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; run certiqa.debian_photos.fetch_debian_photos({str(root)!r}) first.")
        photos.append(downscale_longer_side(read_image(path, max_pixels=None).image, max_side))
    return photos
