"""The Debian photograph catalogue: splits, licences, loading, fetching, the script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from certiqa import debian_photos
from certiqa.debian_photos import CATALOGUE, fetch_debian_photos, load_debian_photos, photo_names
from certiqa.io import downscale_longer_side

REPO = Path(__file__).resolve().parents[1]
REUSABLE = {"CC0-1.0", "CC-BY-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "GPL-2+", "LGPL-3"}


def test_catalogue_splits_and_licences() -> None:
    names = [p.name for p in CATALOGUE]
    assert len(names) == len(set(names)) == 38
    assert photo_names("val") == [names[i] for i in range(4, 38, 5)]  # every fifth entry is held out
    assert len(photo_names("train")) == 31 and sorted(photo_names("train") + photo_names("val")) == sorted(names)
    assert photo_names() == names
    assert {p.licence for p in CATALOGUE} <= REUSABLE
    assert all(p.author and p.path.startswith("usr/share/") for p in CATALOGUE)
    with pytest.raises(ValueError, match="split must be 'train', 'val' or 'all', got 'test'"):
        photo_names("test")


def test_downscale_longer_side() -> None:
    x = torch.arange(2 * 8 * 12, dtype=torch.float32).reshape(2, 8, 12)
    y = downscale_longer_side(x, 6)
    assert y.shape == (2, 4, 6)
    assert torch.allclose(y[:, 0, 0], x[:, :2, :2].mean(dim=(1, 2)))  # an exact 2x area mean
    assert downscale_longer_side(x, 12) is x and downscale_longer_side(x, 100) is x
    assert downscale_longer_side(torch.zeros(3, 1000, 10), 512).shape == (3, 512, 5)
    for bad in (0, 2.5, None):
        with pytest.raises(ValueError, match="max_side must be an int >= 1"):
            downscale_longer_side(x, bad)  # type: ignore[arg-type]


def _fake_root(tmp_path: Path, size: tuple[int, int] = (40, 64)) -> Path:
    """Every package unpacked under tmp_path with a small random photograph at each catalogue path."""
    rng = np.random.default_rng(0)
    for entry in CATALOGUE:
        path = tmp_path / entry.package / entry.path
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, format="PNG")
    (tmp_path / "debs").mkdir()
    return tmp_path


def test_load_downscales_and_checks_names(tmp_path: Path) -> None:
    root = _fake_root(tmp_path, size=(600, 1024))
    photo, = load_debian_photos(root, ["bridge"])
    assert photo.shape == (3, 300, 512) and photo.dtype == torch.float32 and 0 <= photo.min() <= photo.max() <= 1
    assert load_debian_photos(root, ["kite"], max_side=2000)[0].shape == (3, 600, 1024)
    with pytest.raises(ValueError, match=r"unknown Debian photograph\(s\) \['nope'\]"):
        load_debian_photos(root, ["bridge", "nope"])
    (root / CATALOGUE[0].package / CATALOGUE[0].path).unlink()
    with pytest.raises(FileNotFoundError, match="missing; run certiqa.debian_photos.fetch_debian_photos"):
        load_debian_photos(root, [CATALOGUE[0].name])


def test_fetch_keeps_unpacked_packages_and_needs_apt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _fake_root(tmp_path)

    def no_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing should be downloaded: every package is unpacked")

    monkeypatch.setattr(debian_photos.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(debian_photos.subprocess, "run", no_run)
    assert fetch_debian_photos(root) == root
    monkeypatch.setattr(debian_photos.shutil, "which", lambda tool: None if tool == "apt-get" else "/bin/x")
    with pytest.raises(RuntimeError, match="apt-get not found: fetching the Debian photographs needs a Debian"):
        fetch_debian_photos(root)


def test_fetch_reports_a_failed_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(debian_photos.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(debian_photos.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 100, "", "E: Unable to locate package"))
    with pytest.raises(RuntimeError, match=r"apt-get download \S+ failed \(exit 100\): E: Unable to locate"):
        fetch_debian_photos(tmp_path)


def test_make_training_photos_with_debian_photos(tmp_path: Path) -> None:
    root = _fake_root(tmp_path / "debian")
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, str(REPO / "denoisers" / "make_training_photos.py"), str(out), "--photos",
         "--debian", str(root), "--debian-split", "val", "--grid", "jpeg"],
        capture_output=True, text=True, check=True,
    )
    assert f"wrote {7 * 6} images" in run.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{n}_{tag}.png" for n in photo_names("val") for tag in ["clean", *(f"jpeg{k}" for k in range(1, 6))])
    clean = np.asarray(Image.open(out / "kite_clean.png"))
    kite = next(p for p in CATALOGUE if p.name == "kite")
    source = np.asarray(Image.open(root / kite.package / kite.path))
    assert np.array_equal(clean, source)  # 64 px: no downscaling, exact 8-bit round trip
