"""IQA databases as ``torch.utils.data.Dataset``: each reads a database's own
published layout and score file from a root folder.

Every dataset yields ``(image, score)`` with ``image`` a (3, H, W) float32 tensor
in [0, 1] (read by :func:`certiqa.io.read_image`, optionally resized, centre
cropped and transformed) and ``score`` a Python float on the database's own
scale (``dataset.scale`` = (min, max) as published; ``dataset.higher_is_better``
says its direction). ``dataset.split(...)`` gives seeded train/val/test subsets
that never share a reference image (synthetic databases) or an image (authentic
ones).

Databases are not downloaded: a missing root or score file raises
FileNotFoundError naming the expected file and where to get the database.
Spreadsheet score files (SPAQ, CSIQ) are read with ``openpyxl`` when it is
installed; otherwise export the sheet to CSV next to it (same name, ``.csv``).
"""

from __future__ import annotations

import copy
import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .io import read_image

__all__ = [
    "Sample",
    "IQADataset",
    "KonIQ10k",
    "CLIVE",
    "SPAQ",
    "KADID10k",
    "TID2013",
    "LIVE",
    "CSIQ",
    "ScoreTable",
    "CSVDataset",
    "DATABASES",
]


@dataclass(frozen=True)
class Sample:
    """One scored image: ``path`` (absolute), ``score`` on the database scale,
    ``group`` (the reference content it shares with others; the image itself for
    authentic databases), ``dis_type`` (distortion label) and ``ref_path``."""

    path: Path
    score: float
    group: str
    dis_type: str = ""
    ref_path: Path | None = None


class IQADataset(Dataset):
    """Base class: a list of :class:`Sample` and how to load them.

    Subclasses set ``name``, ``url``, ``scale``, ``higher_is_better``,
    ``synthetic`` and ``layout`` (what the root must contain) and implement
    :meth:`_read_samples`.

    Args:
        root: the database's root folder.
        resize: passed to :func:`certiqa.io.read_image` (int shorter side or (H, W)).
        crop: centre crop after resizing, int (square) or (H, W).
        transform: callable applied last to the (3, H, W) tensor.
        min_size: smallest allowed side after resizing (e.g. a model's min_size).
        check_files: verify at construction that every listed image exists
            (names are matched case-insensitively, as some releases differ in case).
    """

    name: str = ""
    url: str = ""
    scale: tuple[float, float] = (0.0, 1.0)
    higher_is_better: bool = True
    synthetic: bool = False
    layout: str = ""

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        resize: int | tuple[int, int] | None = None,
        crop: int | tuple[int, int] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        min_size: int = 1,
        check_files: bool = True,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"{self.name}: root folder {self.root} does not exist. {self._where()}"
            )
        self.resize = resize
        self.crop = _pair_size(crop, "crop") if crop is not None else None
        self.transform = transform
        self.min_size = min_size
        samples = self._read_samples()
        if not samples:
            raise ValueError(f"{self.name}: the score file under {self.root} lists no scored images.")
        self.samples: list[Sample] = _resolve_files(samples, self.name) if check_files else samples

    # -- subclass hooks -------------------------------------------------
    def _read_samples(self) -> list[Sample]:
        raise NotImplementedError

    # -- helpers for subclasses ------------------------------------------
    def _where(self) -> str:
        get = f" Get the database from {self.url}" if self.url else ""
        return f"Expected layout: {self.layout}.{get}"

    def _require(self, *names: str) -> Path:
        """The first of ``names`` (relative to root) that exists, else FileNotFoundError."""
        for name in names:
            path = self.root / name
            if path.is_file():
                return path
        tried = " or ".join(str(self.root / n) for n in names)
        raise FileNotFoundError(f"{self.name}: expected score file {tried} is missing. {self._where()}")

    # -- Dataset API ----------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, float]:
        sample = self.samples[index]
        image = read_image(sample.path, resize=self.resize, min_size=self.min_size).image
        if self.crop is not None:
            image = center_crop(image, self.crop)
        if self.transform is not None:
            image = self.transform(image)
        return image, sample.score

    def __repr__(self) -> str:
        direction = "higher" if self.higher_is_better else "lower"
        return f"{type(self).__name__}({len(self)} images, scale {self.scale}, {direction} is better, root={self.root})"

    @property
    def scores(self) -> np.ndarray:
        """(N,) float64 scores in dataset order."""
        return np.array([s.score for s in self.samples], dtype=np.float64)

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.samples]

    @property
    def groups(self) -> list[str]:
        return [s.group for s in self.samples]

    def subset(self, indices: Iterable[int]) -> "IQADataset":
        """A dataset of the same class and settings holding only ``indices``."""
        out = copy.copy(self)
        out.samples = [self.samples[int(i)] for i in indices]
        return out

    def split_indices(
        self, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0
    ) -> list[list[int]]:
        """Indices of each part, drawn by group (reference image, or the image for
        authentic databases): no group is in two parts. Parts get
        ``round(cumsum(fractions) * n_groups)`` groups; same seed, same split."""
        fr = np.asarray(fractions, dtype=np.float64)
        if fr.ndim != 1 or fr.size < 1 or not np.isfinite(fr).all() or (fr < 0).any() or abs(fr.sum() - 1) > 1e-6:
            raise ValueError(f"fractions must be non-negative and sum to 1, got {tuple(fractions)}.")
        groups = sorted(set(self.groups))
        if len(groups) < int((fr > 0).sum()):
            raise ValueError(
                f"{self.name}: {len(groups)} distinct reference group(s) cannot fill "
                f"{int((fr > 0).sum())} non-empty parts."
            )
        order = np.random.default_rng(seed).permutation(len(groups))
        bounds = np.rint(np.cumsum(fr) * len(groups)).astype(int)
        bounds[-1] = len(groups)
        part_of = {}
        start = 0
        for part, stop in enumerate(bounds):
            for g in order[start:stop]:
                part_of[groups[g]] = part
            start = stop
        parts: list[list[int]] = [[] for _ in fr]
        for i, s in enumerate(self.samples):
            parts[part_of[s.group]].append(i)
        return parts

    def split(self, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0) -> list["IQADataset"]:
        """Seeded split by reference content; see :meth:`split_indices`."""
        return [self.subset(ix) for ix in self.split_indices(fractions, seed)]


# ---------------------------------------------------------------------------
# shared parsing helpers


def _pair_size(size: int | Sequence[int], what: str) -> tuple[int, int]:
    if isinstance(size, int) and size >= 1:
        return (size, size)
    if isinstance(size, Sequence) and len(size) == 2 and all(isinstance(s, int) and s >= 1 for s in size):
        return (size[0], size[1])
    raise ValueError(f"{what} must be a positive int or a pair (H, W) of positive ints, got {size!r}.")


def center_crop(image: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Centre crop (..., H, W) to ``size``; raises ValueError if the image is smaller."""
    ch, cw = _pair_size(size, "crop")
    h, w = image.shape[-2:]
    if ch > h or cw > w:
        raise ValueError(f"cannot crop {ch}x{cw} from a {h}x{w} image; resize it first or crop less.")
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[..., top : top + ch, left : left + cw]


def _resolve_files(samples: list[Sample], name: str) -> list[Sample]:
    """Check that every image exists, matching names case-insensitively."""
    listings: dict[Path, dict[str, str]] = {}

    def find(path: Path) -> Path | None:
        if path.is_file():
            return path
        folder = path.parent
        if folder not in listings:
            listings[folder] = {n.lower(): n for n in os.listdir(folder)} if folder.is_dir() else {}
        real = listings[folder].get(path.name.lower())
        return folder / real if real is not None else None

    out, missing = [], []
    for s in samples:
        found = find(s.path)
        if found is None:
            missing.append(s.path)
            continue
        ref = find(s.ref_path) if s.ref_path is not None else None
        out.append(Sample(found, s.score, s.group, s.dis_type, ref or s.ref_path))
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise FileNotFoundError(
            f"{name}: {len(missing)} of {len(samples)} listed images are missing, e.g. {shown}. "
            "Check the root folder (unpack the whole database there) or pass check_files=False."
        )
    return out


def _to_float(value: Any, where: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected a number, got {value!r}.") from None
    if not np.isfinite(out):
        raise ValueError(f"{where}: expected a finite number, got {value!r}.")
    return out


def _read_rows(path: Path, sheet: str | None = None) -> tuple[list[str], list[dict[str, str]]]:
    """Column names and rows (dicts of strings) of a CSV or of an .xlsx sheet
    (``sheet`` if the workbook has it, else the first). The header is the first
    row with at least two non-empty cells."""
    if path.suffix.lower() == ".xlsx":
        try:
            import openpyxl
        except ImportError:
            raise ImportError(
                f"reading {path} needs openpyxl (pip install openpyxl); or export its sheet to "
                f"{path.with_suffix('.csv')} and certiqa will read that instead."
            ) from None
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
        ws = book[sheet] if sheet in book.sheetnames else book.worksheets[0]
        table = [["" if v is None else _cell_text(v) for v in row] for row in ws.iter_rows(values_only=True)]
        book.close()
    else:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            table = [row for row in csv.reader(fh)]
    table = [row for row in table if any(c.strip() for c in row)]
    head = next((i for i, row in enumerate(table) if sum(bool(c.strip()) for c in row) >= 2), None)
    if head is None:
        raise ValueError(f"{path}: no header row found (a row naming the columns).")
    header = [c.strip() for c in table[head]]
    return header, [dict(zip(header, (c.strip() for c in row))) for row in table[head + 1 :]]


def _header(path: Path) -> list[str]:
    """The first line of a CSV as column names ([] when the file is absent)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return [c.strip() for c in next(csv.reader(fh), [])]


def _cell_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _columns(header: list[str], path: Path, *names: str) -> None:
    absent = [n for n in names if n not in header]
    if absent:
        raise ValueError(f"{path}: missing column(s) {absent}; found {header}.")


def _loadmat(path: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat

    try:
        data = loadmat(path)
    except (ValueError, OSError, TypeError) as err:
        raise ValueError(f"{path}: not a readable MATLAB .mat file ({err}).") from None
    if key not in data:
        found = sorted(k for k in data if not k.startswith("__"))
        raise ValueError(f"{path}: expected variable {key!r}, found {found}.")
    return data[key]


def _mat_strings(arr: np.ndarray) -> list[str]:
    """A MATLAB cell array of strings (any shape) as a flat list of str."""
    return [str(np.ravel(item)[0]) if isinstance(item, np.ndarray) else str(item) for item in np.ravel(arr)]


def _mat_numbers(arr: np.ndarray, path: Path) -> np.ndarray:
    out = np.ravel(np.asarray(arr, dtype=np.float64))
    if not np.isfinite(out).all():
        raise ValueError(f"{path}: contains non-finite scores.")
    return out


# ---------------------------------------------------------------------------
# authentic databases (split by image)


class KonIQ10k(IQADataset):
    """KonIQ-10k: 10,073 in-the-wild photos, MOS on 1..5 (higher is better)."""

    name = "KonIQ-10k"
    url = "http://database.mmsp-kn.de/koniq-10k-database.html"
    scale = (1.0, 5.0)
    layout = "koniq10k_scores_and_distributions.csv (columns image_name, MOS, ...) and 1024x768/<image_name>"

    def _read_samples(self) -> list[Sample]:
        path = self._require("koniq10k_scores_and_distributions.csv")
        header, rows = _read_rows(path)
        _columns(header, path, "image_name", "MOS")
        folder = self.root / "1024x768"
        return [
            Sample(folder / r["image_name"], _to_float(r["MOS"], f"{path} row {i + 2}"), r["image_name"], "authentic")
            for i, r in enumerate(rows)
        ]


class CLIVE(IQADataset):
    """LIVE In the Wild Image Quality Challenge (CLIVE): 1,162 photos, MOS on 0..100.

    The seven training images (t1.bmp ... t7.bmp in Images/trainingImages) are
    left out unless ``include_training=True``, as in the published protocol."""

    name = "CLIVE"
    url = "https://live.ece.utexas.edu/research/ChallengeDB/index.html"
    scale = (0.0, 100.0)
    layout = "Data/AllImages_release.mat, Data/AllMOS_release.mat and Images/<name> (Images/trainingImages/t*.bmp)"

    def __init__(self, root: str | os.PathLike, *, include_training: bool = False, **kwargs: Any) -> None:
        self.include_training = include_training
        super().__init__(root, **kwargs)

    def _read_samples(self) -> list[Sample]:
        names_file = self._require("Data/AllImages_release.mat")
        mos_file = self._require("Data/AllMOS_release.mat")
        names = _mat_strings(_loadmat(names_file, "AllImages_release"))
        mos = _mat_numbers(_loadmat(mos_file, "AllMOS_release"), mos_file)
        if len(names) != len(mos):
            raise ValueError(f"{self.name}: {names_file} lists {len(names)} images but {mos_file} {len(mos)} scores.")
        out = []
        for name, score in zip(names, mos):
            training = re.fullmatch(r"t\d+\.bmp", name, flags=re.IGNORECASE) is not None
            if training and not self.include_training:
                continue
            folder = self.root / "Images" / ("trainingImages" if training else "")
            out.append(Sample(folder / name, float(score), name, "authentic"))
        return out


class SPAQ(IQADataset):
    """SPAQ: 11,125 smartphone photos, MOS on 0..100.

    Reads ``Annotations/MOS and Image attribute scores.xlsx`` (needs openpyxl)
    or the same sheet exported as ``.csv`` beside it; images in ``TestImage/``
    (or ``Dataset/TestImage/``)."""

    name = "SPAQ"
    url = "https://github.com/h4nwei/SPAQ"
    scale = (0.0, 100.0)
    layout = (
        "Annotations/MOS and Image attribute scores.xlsx (or .csv; columns 'Image name', 'MOS') "
        "and TestImage/<Image name>"
    )

    def _read_samples(self) -> list[Sample]:
        stem = "Annotations/MOS and Image attribute scores"
        path = self._require(stem + ".csv", stem + ".xlsx")
        header, rows = _read_rows(path)
        _columns(header, path, "Image name", "MOS")
        folder = self.root / "TestImage"
        if not folder.is_dir() and (self.root / "Dataset" / "TestImage").is_dir():
            folder = self.root / "Dataset" / "TestImage"
        return [
            Sample(folder / r["Image name"], _to_float(r["MOS"], f"{path} row {i + 2}"), r["Image name"], "authentic")
            for i, r in enumerate(rows)
        ]


# ---------------------------------------------------------------------------
# synthetic databases (split by reference image)

TID2013_TYPES = (
    "awgn", "color_noise", "correlated_noise", "masked_noise", "high_frequency_noise", "impulse_noise",
    "quantization_noise", "gaussian_blur", "denoising", "jpeg", "jpeg2000", "jpeg_transmission_errors",
    "jpeg2000_transmission_errors", "non_eccentricity_pattern_noise", "local_block_distortions", "mean_shift",
    "contrast_change", "saturation_change", "multiplicative_noise", "comfort_noise", "noisy_compression",
    "color_quantization_dither", "chromatic_aberrations", "sparse_sampling",
)  # fmt: skip

KADID_TYPES = (
    "gaussian_blur", "lens_blur", "motion_blur", "color_diffusion", "color_shift", "color_quantization",
    "saturation_hsv", "saturation_lab", "jpeg2000", "jpeg", "white_noise", "white_noise_color", "impulse_noise",
    "multiplicative_noise", "denoise", "brighten", "darken", "mean_shift", "jitter", "non_eccentricity_patch",
    "pixelate", "quantization", "color_block", "high_sharpen", "contrast_change",
)  # fmt: skip


def _type_label(code: str, labels: Sequence[str], where: str) -> str:
    index = int(code) - 1
    if not 0 <= index < len(labels):
        raise ValueError(f"{where}: distortion code {code} is outside 1..{len(labels)}.")
    return labels[index]


class KADID10k(IQADataset):
    """KADID-10k: 81 references x 25 distortions x 5 levels, MOS on 1..5 (the
    column is called ``dmos`` but higher is better)."""

    name = "KADID-10k"
    url = "http://database.mmsp-kn.de/kadid-10k-database.html"
    scale = (1.0, 5.0)
    synthetic = True
    layout = "dmos.csv (columns dist_img, ref_img, dmos) and images/<dist_img>, images/<ref_img>"

    def _read_samples(self) -> list[Sample]:
        path = self._require("dmos.csv")
        header, rows = _read_rows(path)
        _columns(header, path, "dist_img", "ref_img", "dmos")
        folder = self.root / "images"
        out = []
        for i, r in enumerate(rows):
            where = f"{path} row {i + 2}"
            match = re.fullmatch(r"(I\d+)_(\d+)_(\d+)\.\w+", r["dist_img"], flags=re.IGNORECASE)
            if match is None:
                raise ValueError(f"{where}: image name {r['dist_img']!r} is not like I01_01_01.png.")
            label = _type_label(match.group(2), KADID_TYPES, where)
            out.append(
                Sample(folder / r["dist_img"], _to_float(r["dmos"], where), r["ref_img"].split(".")[0].upper(),
                       label, folder / r["ref_img"])
            )  # fmt: skip
        return out


class TID2013(IQADataset):
    """TID2013: 25 references x 24 distortions x 5 levels, MOS on 0..9 (higher is better)."""

    name = "TID2013"
    url = "https://www.ponomarenko.info/tid2013.htm"
    scale = (0.0, 9.0)
    synthetic = True
    layout = "mos_with_names.txt (lines '<MOS> <name>'), distorted_images/<name>, reference_images/I01.BMP ..."

    def _read_samples(self) -> list[Sample]:
        path = self._require("mos_with_names.txt")
        out = []
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{path} line {line_no}"
                parts = line.split()
                if len(parts) != 2:
                    raise ValueError(f"{where}: expected '<MOS> <image name>', got {line.strip()!r}.")
                match = re.fullmatch(r"(i\d+)_(\d+)_(\d+)\.\w+", parts[1], flags=re.IGNORECASE)
                if match is None:
                    raise ValueError(f"{where}: image name {parts[1]!r} is not like i01_01_1.bmp.")
                ref = match.group(1).upper()
                out.append(
                    Sample(self.root / "distorted_images" / parts[1], _to_float(parts[0], where), ref,
                           _type_label(match.group(2), TID2013_TYPES, where), self.root / "reference_images" / f"{ref}.BMP")
                )  # fmt: skip
        return out


class LIVE(IQADataset):
    """LIVE Image Quality Assessment Database, release 2: 29 references, 779
    distorted images, DMOS on 0..100 (lower is better; the realigned DMOS runs a
    little outside that range).

    ``realigned=True`` (default, the usual choice) reads ``dmos_realigned.mat``
    (``dmos_new``); ``False`` reads ``dmos.mat`` (``dmos``). Reference entries
    (``orgs == 1``) are left out."""

    name = "LIVE"
    url = "https://live.ece.utexas.edu/research/quality/subjective.htm"
    scale = (0.0, 100.0)
    higher_is_better = False
    synthetic = True
    layout = (
        "dmos_realigned.mat (or dmos.mat), refnames_all.mat, jp2k/ jpeg/ wn/ gblur/ fastfading/ "
        "(img1.bmp ...) and refimgs/"
    )
    FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))

    def __init__(self, root: str | os.PathLike, *, realigned: bool = True, **kwargs: Any) -> None:
        self.realigned = realigned
        super().__init__(root, **kwargs)

    def _read_samples(self) -> list[Sample]:
        mat, key = ("dmos_realigned.mat", "dmos_new") if self.realigned else ("dmos.mat", "dmos")
        dmos_file = self._require(mat)
        refs_file = self._require("refnames_all.mat")
        dmos = _mat_numbers(_loadmat(dmos_file, key), dmos_file)
        orgs = _mat_numbers(_loadmat(dmos_file, "orgs"), dmos_file)
        refs = _mat_strings(_loadmat(refs_file, "refnames_all"))
        total = sum(n for _, n in self.FOLDERS)
        if not len(dmos) == len(orgs) == len(refs) == total:
            raise ValueError(
                f"{self.name}: expected {total} entries in {dmos_file} ({key}, orgs) and {refs_file}, "
                f"got {len(dmos)}, {len(orgs)} and {len(refs)}."
            )
        names = [(folder, f"img{i}.bmp") for folder, n in self.FOLDERS for i in range(1, n + 1)]
        return [
            Sample(self.root / folder / img, float(score), ref, folder, self.root / "refimgs" / ref)
            for (folder, img), score, org, ref in zip(names, dmos, orgs, refs)
            if org == 0
        ]


class CSIQ(IQADataset):
    """CSIQ: 30 references x 6 distortions, 866 images, DMOS on 0..1 (lower is better).

    Reads ``csiq.DMOS.xlsx`` (sheet 'all_by_image'; needs openpyxl) or that
    sheet exported as ``csiq.DMOS.csv``."""

    name = "CSIQ"
    url = "https://s2.smu.edu/~eclarson/csiq.html"
    scale = (0.0, 1.0)
    higher_is_better = False
    synthetic = True
    layout = (
        "csiq.DMOS.xlsx or csiq.DMOS.csv (columns image, dst_type, dst_lev, dmos), "
        "dst_imgs/<folder>/<image>.<TYPE>.<lev>.png and src_imgs/<image>.png"
    )
    # dst_type in the score file -> (folder under dst_imgs, tag in the file name)
    TYPES = {
        "noise": ("awgn", "AWGN"),
        "jpeg": ("jpeg", "JPEG"),
        "jpeg 2000": ("jpeg2000", "jpeg2000"),
        "fnoise": ("fnoise", "fnoise"),
        "blur": ("blur", "BLUR"),
        "contrast": ("contrast", "contrast"),
    }

    def _read_samples(self) -> list[Sample]:
        path = self._require("csiq.DMOS.csv", "csiq.DMOS.xlsx")
        header, rows = _read_rows(path, sheet="all_by_image")
        _columns(header, path, "image", "dst_type", "dst_lev", "dmos")
        out = []
        for i, r in enumerate(rows):
            where = f"{path} row {i + 2}"
            kind = r["dst_type"].strip().lower()
            if kind not in self.TYPES:
                raise ValueError(f"{where}: unknown dst_type {r['dst_type']!r}; expected one of {sorted(self.TYPES)}.")
            folder, tag = self.TYPES[kind]
            level = int(_to_float(r["dst_lev"], where))
            name = r["image"]
            out.append(
                Sample(self.root / "dst_imgs" / folder / f"{name}.{tag}.{level}.png", _to_float(r["dmos"], where),
                       name, kind, self.root / "src_imgs" / f"{name}.png")
            )  # fmt: skip
        return out


# ---------------------------------------------------------------------------
# table layouts

DATABASES: dict[str, type[IQADataset]] = {
    cls.name: cls for cls in (KonIQ10k, CLIVE, SPAQ, KADID10k, TID2013, LIVE, CSIQ)
}
_TABLE_ALIASES = {"LIVE_Challenge": "CLIVE"}


class CSVDataset(IQADataset):
    """Images under ``root`` listed in a CSV with a path column and a score column.

    Args:
        root: folder the paths are relative to.
        table: the CSV file (default ``root/manifest.csv``).
        scale: (min, max) of the score scale.
        higher_is_better: the score's direction.
        path_column, score_column: column names.
        ref_column: optional column with the reference image's path (relative to
            root); it also sets the split group.
        group_column: optional column naming the content group for splits
            (default: the reference, else each image is its own group).
        type_column: optional distortion-label column.
        where: keep only rows whose column equals a value (or is in a set of
            values), e.g. ``{"dataset": "TID2013"}``.
        skip_unscored: drop rows with an empty score instead of raising.
        **kwargs: as :class:`IQADataset`.
    """

    name = "CSV"
    layout = "a CSV whose rows name an image (relative to root) and its score"

    def __init__(
        self,
        root: str | os.PathLike,
        table: str | os.PathLike | None = None,
        *,
        scale: tuple[float, float],
        higher_is_better: bool,
        path_column: str = "file",
        score_column: str = "score",
        ref_column: str | None = None,
        group_column: str | None = None,
        type_column: str | None = None,
        where: Mapping[str, str | Iterable[str]] | None = None,
        skip_unscored: bool = False,
        **kwargs: Any,
    ) -> None:
        lo, hi = (float(v) for v in scale)
        if not lo < hi:
            raise ValueError(f"scale must be (min, max) with min < max, got {scale!r}.")
        self.scale = (lo, hi)
        self.higher_is_better = bool(higher_is_better)
        self.table = Path(root) / "manifest.csv" if table is None else Path(table)
        self.columns = (path_column, score_column, ref_column, group_column, type_column)
        self.where = {k: {v} if isinstance(v, str) else set(v) for k, v in (where or {}).items()}
        self.skip_unscored = skip_unscored
        self.name = self.table.name
        super().__init__(root, **kwargs)

    def _read_samples(self) -> list[Sample]:
        if not self.table.is_file():
            raise FileNotFoundError(f"score table {self.table} does not exist.")
        header, rows = _read_rows(self.table)
        path_col, score_col, ref_col, group_col, type_col = self.columns
        _columns(header, self.table, path_col, score_col, *[c for c in self.columns[2:] if c], *self.where)
        out = []
        for i, r in enumerate(rows):
            if any(r[k] not in values for k, values in self.where.items()):
                continue
            where = f"{self.table} row {i + 2}"
            if not r[score_col]:
                if self.skip_unscored:
                    continue
                raise ValueError(f"{where}: empty score for {r[path_col]!r}; pass skip_unscored=True to drop such rows.")
            ref = r[ref_col] if ref_col else ""
            group = r[group_col] if group_col else (ref or r[path_col])
            out.append(
                Sample(self.root / r[path_col], _to_float(r[score_col], where), group,
                       r[type_col] if type_col else "", self.root / ref if ref else None)
            )  # fmt: skip
        return out


class ScoreTable(CSVDataset):
    """A single-table score file with columns ``dis_img_path, dis_type,
    [ref_img_path], score`` (paths relative to ``root``), as in the widely
    shared IQA-dataset tables. Splits group by ``ref_img_path`` when present.

    ``scale`` and ``higher_is_better`` default to the database named by the
    table's file name (KonIQ-10k.csv, LIVE_Challenge.csv, SPAQ.csv,
    KADID-10k.csv, TID2013.csv, LIVE.csv, CSIQ.csv)."""

    def __init__(
        self,
        root: str | os.PathLike,
        table: str | os.PathLike,
        *,
        scale: tuple[float, float] | None = None,
        higher_is_better: bool | None = None,
        **kwargs: Any,
    ) -> None:
        stem = Path(table).stem
        known = DATABASES.get(_TABLE_ALIASES.get(stem, stem))
        if scale is None or higher_is_better is None:
            if known is None:
                raise ValueError(
                    f"{table}: unknown database {stem!r}; pass scale=(min, max) and higher_is_better "
                    f"(known: {sorted(DATABASES) + sorted(_TABLE_ALIASES)})."
                )
            scale = known.scale if scale is None else scale
            higher_is_better = known.higher_is_better if higher_is_better is None else higher_is_better
        ref = "ref_img_path" if "ref_img_path" in _header(Path(table)) else None
        super().__init__(
            root, table, scale=scale, higher_is_better=higher_is_better, path_column="dis_img_path",
            score_column="score", ref_column=ref, type_column="dis_type", **kwargs,
        )  # fmt: skip
        self.synthetic = ref is not None
