"""certiqa.io on files written here with Pillow: formats, bit depths, modes,
EXIF orientation, resizing, folder expansion and every error path."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from certiqa.io import ImageLoadError, file_sha256, find_images, load_image, read_image, resize_image


def _rgb(h=6, w=8, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _expected(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr.astype(np.float32) / 255).permute(2, 0, 1)


@pytest.mark.parametrize("ext", ["png", "bmp", "tif", "ppm"])
def test_lossless_8bit_rgb_exact(tmp_path, ext):
    arr = _rgb()
    Image.fromarray(arr).save(tmp_path / f"x.{ext}")
    loaded = read_image(tmp_path / f"x.{ext}")
    assert loaded.image.dtype == torch.float32 and loaded.image.shape == (3, 6, 8)
    torch.testing.assert_close(loaded.image, _expected(arr), rtol=0, atol=0)
    assert loaded.original_size == (6, 8) and not loaded.resized and loaded.path == str(tmp_path / f"x.{ext}")


def test_jpeg_matches_pillow_decode(tmp_path):
    arr = _rgb(16, 24)
    Image.fromarray(arr).save(tmp_path / "x.jpg", quality=90)
    decoded = np.asarray(Image.open(tmp_path / "x.jpg").convert("RGB"))
    torch.testing.assert_close(load_image(tmp_path / "x.jpg"), _expected(decoded), rtol=0, atol=0)


def test_16bit_grayscale_png_full_precision(tmp_path):
    arr = np.array([[0, 1, 257, 32768], [40000, 65534, 65535, 12345]], dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    image = load_image(tmp_path / "g16.png")
    want = torch.from_numpy((arr / 65535.0).astype(np.float32))
    assert image.shape == (3, 2, 4)
    for c in range(3):
        torch.testing.assert_close(image[c], want, rtol=0, atol=0)
    assert float(image[0, 0, 1]) == np.float32(1 / 65535)  # finer than any 8-bit step


def test_grayscale_replicated(tmp_path):
    arr = _rgb()[..., 0]
    Image.fromarray(arr, mode="L").save(tmp_path / "g.png")
    image = load_image(tmp_path / "g.png")
    for c in range(3):
        torch.testing.assert_close(image[c], torch.from_numpy(arr / np.float32(255)), rtol=0, atol=0)


def test_rgba_alpha_dropped(tmp_path):
    arr = np.concatenate([_rgb(), np.zeros((6, 8, 1), np.uint8)], axis=2)  # fully transparent
    Image.fromarray(arr, mode="RGBA").save(tmp_path / "a.png")
    torch.testing.assert_close(load_image(tmp_path / "a.png"), _expected(arr[..., :3]), rtol=0, atol=0)


@pytest.mark.parametrize("transparency", [False, True])
def test_palette(tmp_path, transparency):
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9)
    idx = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    img = Image.fromarray(idx, mode="P")
    img.putpalette(palette)
    kwargs = {"transparency": 1} if transparency else {}
    img.save(tmp_path / "p.png", **kwargs)
    image = load_image(tmp_path / "p.png")
    colours = np.array(palette[:9], np.float32).reshape(3, 3) / 255
    torch.testing.assert_close(image, torch.from_numpy(colours[idx]).permute(2, 0, 1), rtol=0, atol=0)


@pytest.mark.parametrize(
    "orientation,op",
    [(3, lambda a: a[::-1, ::-1]), (6, lambda a: np.rot90(a, k=-1)), (8, lambda a: np.rot90(a, k=1)),
     (2, lambda a: a[:, ::-1])],
)  # fmt: skip
def test_exif_orientation_applied(tmp_path, orientation, op):
    arr = np.zeros((16, 32, 3), np.uint8)
    arr[:8, :16] = (255, 0, 0)  # top-left quadrant red on black, survives JPEG well
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(tmp_path / "o.jpg", exif=exif.tobytes(), quality=95)
    loaded = read_image(tmp_path / "o.jpg")
    want = op(arr)
    assert loaded.image.shape == (3, *want.shape[:2])
    assert loaded.original_size == want.shape[:2]
    red = loaded.image[0] > 0.5
    assert torch.equal(red, torch.from_numpy(want[..., 0].copy() > 127))


def test_resize_shorter_side_and_pair(tmp_path):
    Image.fromarray(_rgb(20, 40)).save(tmp_path / "r.png")
    short = read_image(tmp_path / "r.png", resize=10)
    assert short.image.shape == (3, 10, 20) and short.original_size == (20, 40) and short.resized
    pair = read_image(tmp_path / "r.png", resize=(7, 9))
    assert pair.image.shape == (3, 7, 9) and pair.resized
    same = read_image(tmp_path / "r.png", resize=(20, 40))
    assert not same.resized and float(same.image.min()) >= 0 and float(same.image.max()) <= 1


def test_resize_constant_image_stays_constant():
    x = torch.full((3, 30, 50), 0.25)
    out = resize_image(x, 12)
    assert out.shape == (3, 12, 20)
    torch.testing.assert_close(out, torch.full_like(out, 0.25))
    assert resize_image(x[None], (5, 5)).shape == (1, 3, 5, 5)


@pytest.mark.parametrize("bad", [0, -3, (0, 4), (4,), (2.5, 3), "10"])
def test_resize_bad_size(bad):
    with pytest.raises(ValueError, match="resize must be"):
        resize_image(torch.zeros(3, 4, 4), bad)


def test_missing_file(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        read_image(tmp_path / "nope.png")


def test_not_an_image(tmp_path):
    (tmp_path / "t.png").write_text("hello, I am text")
    with pytest.raises(ImageLoadError, match="not a readable image"):
        read_image(tmp_path / "t.png")


def _unreadable(path, monkeypatch) -> None:
    """Make ``path`` unreadable: chmod 000 blocks reads except for root (as in CI), so opening it
    also raises the PermissionError the system gives."""
    import builtins
    import errno

    path.chmod(0)
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if os.fspath(file) == os.fspath(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)


def test_an_unreadable_file_says_permission_denied_with_its_path(tmp_path, monkeypatch):
    Image.fromarray(_rgb(40, 40)).save(tmp_path / "locked.png")
    _unreadable(tmp_path / "locked.png", monkeypatch)
    with pytest.raises(ImageLoadError) as caught:
        read_image(tmp_path / "locked.png")
    assert str(caught.value) == (f"{tmp_path / 'locked.png'}: cannot read the file: permission denied; check that this "
                                 "user may read it.")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="chmod 000 does not stop root from reading")
def test_chmod_000_says_permission_denied(tmp_path):
    Image.fromarray(_rgb(40, 40)).save(tmp_path / "locked.png")
    (tmp_path / "locked.png").chmod(0)
    with pytest.raises(ImageLoadError, match=r"locked\.png: cannot read the file: permission denied"):
        read_image(tmp_path / "locked.png")


def test_the_cli_names_an_unreadable_image(tmp_path, monkeypatch, capsys):
    from certiqa.cli import main

    Image.fromarray(_rgb(40, 40)).save(tmp_path / "ok.png")
    Image.fromarray(_rgb(40, 40)).save(tmp_path / "locked.png")
    _unreadable(tmp_path / "locked.png", monkeypatch)
    assert main(["certify", str(tmp_path / "ok.png"), str(tmp_path / "locked.png"), "--n", "10", "--alpha", "0.1",
                 "--quiet"]) == 1  # one image failed
    err = capsys.readouterr().err
    assert f"{tmp_path / 'locked.png'}: cannot read the file: permission denied" in err and "truncated" not in err


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_truncated_file(tmp_path, ext):
    Image.fromarray(_rgb(64, 64)).save(tmp_path / f"full.{ext}")
    data = (tmp_path / f"full.{ext}").read_bytes()
    (tmp_path / f"cut.{ext}").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="truncated or corrupt"):
        read_image(tmp_path / f"cut.{ext}")


def test_too_small_and_too_large(tmp_path):
    Image.fromarray(_rgb(20, 40)).save(tmp_path / "s.png")
    with pytest.raises(ImageLoadError, match="20x40 pixels is smaller than the 33x33"):
        read_image(tmp_path / "s.png", min_size=33)
    with pytest.raises(ImageLoadError, match="smaller than the 12x12"):
        read_image(tmp_path / "s.png", min_size=12, resize=10)  # checked after resizing
    assert read_image(tmp_path / "s.png", min_size=20).image.shape == (3, 20, 40)
    with pytest.raises(ImageLoadError, match="40x20 = 800 pixels exceeds max_pixels=799"):
        read_image(tmp_path / "s.png", max_pixels=799)
    assert read_image(tmp_path / "s.png", max_pixels=800).image.shape == (3, 20, 40)
    assert read_image(tmp_path / "s.png", max_pixels=None).image.shape == (3, 20, 40)


def test_find_images(tmp_path):
    for rel in ["b.png", "a.JPG", "sub/c.bmp", "sub/deep/d.tiff", "notes.txt", "sub/e.webp", "sub/f.gif"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    names = [p.relative_to(tmp_path).as_posix() for p in find_images([tmp_path])]
    assert names == sorted(["a.JPG", "b.png", "sub/c.bmp", "sub/deep/d.tiff", "sub/e.webp", "sub/f.gif"])
    flat = [p.name for p in find_images([tmp_path], recursive=False)]
    assert flat == ["a.JPG", "b.png"]
    # an explicit file is kept whatever its extension, so that it is reported, not skipped
    assert find_images([tmp_path / "notes.txt", tmp_path / "sub"])[0] == tmp_path / "notes.txt"
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        find_images([tmp_path / "missing"])


def test_max_pixels_governs_not_pillows_warning(tmp_path, monkeypatch):
    """Pillow warns above MAX_IMAGE_PIXELS and refuses above twice that; the
    caller's max_pixels is the limit up to Pillow's hard refusal."""
    Image.fromarray(_rgb(20, 40)).save(tmp_path / "s.png")  # 800 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 800 > 500: Pillow only warns
    assert read_image(tmp_path / "s.png", max_pixels=None).image.shape == (3, 20, 40)
    assert read_image(tmp_path / "s.png", max_pixels=1000).image.shape == (3, 20, 40)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # 800 > 2 * 300: Pillow refuses
    with pytest.raises(ImageLoadError, match="raise PIL.Image.MAX_IMAGE_PIXELS"):
        read_image(tmp_path / "s.png", max_pixels=None)


def test_16bit_big_endian_tiff(tmp_path):
    arr = np.array([[0, 1000, 65535], [300, 2, 50000]], dtype=np.uint16)
    Image.frombytes("I;16B", (3, 2), arr.astype(">u2").tobytes()).save(tmp_path / "be.tif")
    image = load_image(tmp_path / "be.tif")
    torch.testing.assert_close(image[1], torch.from_numpy((arr / 65535.0).astype(np.float32)), rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["LA", "1"])
def test_gray_alpha_and_bilevel(tmp_path, mode):
    arr = np.array([[0, 255, 255], [255, 0, 0]], dtype=np.uint8)
    Image.fromarray(arr, mode="L").convert(mode).save(tmp_path / "m.png")
    image = load_image(tmp_path / "m.png")
    want = torch.from_numpy(arr / np.float32(255))
    assert image.shape == (3, 2, 3) and all(torch.equal(image[c], want) for c in range(3))


def test_gif_and_multi_frame_files_read_their_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((6, 5, 3), v, dtype=np.uint8)) for v in (10, 200, 90)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "still.gif")
    frames[1].save(tmp_path / "pages.tif", save_all=True, append_images=frames[2:])
    for name, frame_count, value in (("anim.gif", 3, 10), ("still.gif", 1, 10), ("pages.tif", 2, 200)):
        loaded = read_image(tmp_path / name)
        assert loaded.frames == frame_count and loaded.image.shape == (3, 6, 5)
        assert torch.equal(loaded.image, torch.full((3, 6, 5), value / np.float32(255)))


def test_file_sha256(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert file_sha256(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
