"""certiqa.data: each database's own layout (fake copies written here in the real
file formats), the real score tables in ../shared/data/scores, the generic CSV
form on manifest.csv, reference-disjoint splits and every error path."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.io import savemat
from torch.utils.data import DataLoader

from certiqa import data as D


def _image(path: Path, size=(12, 9), value=100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    arr[0, 0] = (255, 0, 0)
    Image.fromarray(arr).save(path, format="PNG")  # lossless whatever the name says


def _csv(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _cell(names: list[str]) -> np.ndarray:
    cell = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        cell[i, 0] = n
    return cell


def _table(shared: Path, name: str) -> list[dict[str, str]]:
    with open(shared / "scores" / f"{name}.csv") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------
# fake layouts, one per database, in that database's own format


def make_koniq(root: Path) -> None:
    rows = [["a.jpg", 0, 1, 2, 3, 4, 10, 3.25, 0.8, 55.0], ["b.jpg", 1, 1, 1, 1, 1, 5, 1.5, 0.9, 20.0],
            ["c.jpg", 0, 0, 0, 2, 8, 10, 4.75, 0.4, 90.0]]  # fmt: skip
    _csv(root / "koniq10k_scores_and_distributions.csv",
         ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"], rows)  # fmt: skip
    for r in rows:
        _image(root / "1024x768" / r[0])


def make_clive(root: Path) -> None:
    names = ["t1.bmp", "t2.bmp", "10.bmp", "11.bmp", "12.bmp"]
    (root / "Data").mkdir(parents=True)
    savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": _cell(names)})
    savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([[50.0, 60.0, 12.5, 70.25, 88.0]])})
    for n in names:
        _image(root / "Images" / ("trainingImages" if n.startswith("t") else "") / n)


def make_spaq(root: Path) -> None:
    rows = [["00001.jpg", 48.86, 1, 2, 3, 4, 5], ["00002.jpg", 62.5, 1, 2, 3, 4, 5]]
    _csv(root / "Annotations" / "MOS and Image attribute scores.csv",
         ["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"], rows)  # fmt: skip
    for r in rows:
        _image(root / "TestImage" / r[0])


def make_kadid(root: Path) -> None:
    rows = [[f"I{r:02d}_{t:02d}_{lev:02d}.png", f"I{r:02d}.png", 1 + (r + t + lev) % 4 + 0.25, 0.1]
            for r in (1, 2, 3) for t in (1, 11, 25) for lev in (1, 5)]  # fmt: skip
    _csv(root / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], rows)
    for r in rows:
        _image(root / "images" / r[0])
        _image(root / "images" / r[1])


def make_tid(root: Path) -> None:
    lines = []
    for ref in (1, 2, 25):
        _image(root / "reference_images" / f"I{ref:02d}.BMP")
        for t in (1, 10, 24):
            name = f"i{ref:02d}_{t:02d}_{t % 5 + 1}.bmp"
            lines.append(f"{(ref + t) % 9 + 0.5:.5f} {name}")
            # i02 files are upper-case on disk, as in some copies of the release
            disk = name.upper() if ref == 2 else name
            _image(root / "distorted_images" / disk)
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n")


LIVE_REFS = ["womanhat.bmp", "sailing1.bmp", "parrots.bmp"]


def make_live(root: Path, realigned: bool = True, n: int = 982) -> np.ndarray:
    """982 entries as in the release; every 5th is a reference (orgs = 1)."""
    root.mkdir(parents=True, exist_ok=True)
    idx = np.arange(n)
    dmos = (idx % 97).astype(np.float64) + 0.5
    orgs = (idx % 5 == 0).astype(np.float64)
    key = "dmos_new" if realigned else "dmos"
    savemat(root / ("dmos_realigned.mat" if realigned else "dmos.mat"), {key: dmos[None], "orgs": orgs[None]})
    refs = np.empty((1, n), dtype=object)
    for i in range(n):
        refs[0, i] = LIVE_REFS[i % 3]
    savemat(root / "refnames_all.mat", {"refnames_all": refs})
    for folder, count in D.LIVE.FOLDERS:
        (root / folder).mkdir(exist_ok=True)
        for i in range(1, count + 1):
            (root / folder / f"img{i}.bmp").touch()
    _image(root / "jpeg" / "img2.bmp")  # entry 227 + 1 = index 228: a real image
    return dmos


CSIQ_ROWS = [  # image, dst_idx, dst_type, dst_lev, dmos_std, dmos
    ["1600", 1, "noise", 1, 0.01, 0.062], ["1600", 2, "jpeg", 3, 0.02, 0.3], ["bridge", 3, "jpeg 2000", 2, 0.03, 0.2],
    ["bridge", 4, "fnoise", 5, 0.04, 0.7], ["woman", 5, "blur", 4, 0.05, 0.55], ["woman", 6, "contrast", 1, 0.0, 0.0],
]  # fmt: skip


def make_csiq(root: Path) -> None:
    # the published sheet starts with an empty column; exported CSVs keep it
    _csv(root / "csiq.DMOS.csv", ["", "image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"],
         [[""] + r for r in CSIQ_ROWS])  # fmt: skip
    for name, _, kind, lev, _, _ in CSIQ_ROWS:
        folder, tag = D.CSIQ.TYPES[kind]
        _image(root / "dst_imgs" / folder / f"{name}.{tag}.{lev}.png")
        _image(root / "src_imgs" / f"{name}.png")


# ---------------------------------------------------------------------------
# each database's own layout


def test_koniq_layout(tmp_path):
    make_koniq(tmp_path)
    ds = D.KonIQ10k(tmp_path)
    assert len(ds) == 3 and ds.scale == (1.0, 5.0) and ds.higher_is_better and not ds.synthetic
    np.testing.assert_array_equal(ds.scores, [3.25, 1.5, 4.75])
    image, score = ds[2]
    assert image.shape == (3, 9, 12) and image.dtype == torch.float32 and score == 4.75
    assert float(image[0, 0, 0]) == 1.0 and abs(float(image[1, 1, 1]) - 100 / 255) < 1e-6


def test_clive_layout_skips_training_images(tmp_path):
    make_clive(tmp_path)
    ds = D.CLIVE(tmp_path)
    assert [p.name for p in ds.paths] == ["10.bmp", "11.bmp", "12.bmp"]
    np.testing.assert_array_equal(ds.scores, [12.5, 70.25, 88.0])
    assert ds.scale == (0.0, 100.0) and ds.higher_is_better
    full = D.CLIVE(tmp_path, include_training=True)
    assert len(full) == 5 and full.paths[0] == tmp_path / "Images" / "trainingImages" / "t1.bmp"
    assert full[0][1] == 50.0


def test_spaq_layout_csv_export(tmp_path):
    make_spaq(tmp_path)
    ds = D.SPAQ(tmp_path)
    assert len(ds) == 2 and ds[1][1] == 62.5 and ds.scale == (0.0, 100.0)


def test_spaq_dataset_subfolder(tmp_path):
    make_spaq(tmp_path)
    (tmp_path / "Dataset").mkdir()
    (tmp_path / "TestImage").rename(tmp_path / "Dataset" / "TestImage")
    assert D.SPAQ(tmp_path).paths[0] == tmp_path / "Dataset" / "TestImage" / "00001.jpg"


def test_spaq_xlsx_with_openpyxl(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Image name", "MOS", "Brightness"])
    sheet.append(["00001.jpg", 48.86, 50])
    (tmp_path / "Annotations").mkdir()
    book.save(tmp_path / "Annotations" / "MOS and Image attribute scores.xlsx")
    _image(tmp_path / "TestImage" / "00001.jpg")
    assert D.SPAQ(tmp_path).scores.tolist() == [48.86]


def test_xlsx_without_openpyxl_says_export_csv(tmp_path, monkeypatch):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "MOS and Image attribute scores.xlsx").write_bytes(b"PK")
    monkeypatch.setitem(sys.modules, "openpyxl", None)
    with pytest.raises(ImportError, match=r"openpyxl.*MOS and Image attribute scores\.csv"):
        D.SPAQ(tmp_path)


def test_kadid_layout(tmp_path):
    make_kadid(tmp_path)
    ds = D.KADID10k(tmp_path)
    assert len(ds) == 18 and ds.synthetic and ds.higher_is_better and ds.scale == (1.0, 5.0)
    s = ds.samples[2]  # I01_11_01
    assert s.path.name == "I01_11_01.png" and s.dis_type == "white_noise" and s.group == "I01"
    assert s.ref_path == tmp_path / "images" / "I01.png" and s.score == 1 + (1 + 11 + 1) % 4 + 0.25
    assert {x.dis_type for x in ds.samples} == {"gaussian_blur", "white_noise", "contrast_change"}
    assert len(set(ds.groups)) == 3


def test_tid2013_layout_case_insensitive_files(tmp_path):
    make_tid(tmp_path)
    ds = D.TID2013(tmp_path)
    assert len(ds) == 9 and ds.scale == (0.0, 9.0) and ds.higher_is_better and ds.synthetic
    assert sorted(set(ds.groups)) == ["I01", "I02", "I25"]
    s = ds.samples[3]  # i02_01_2.bmp, stored upper-case on disk
    assert s.path.name == "I02_01_2.BMP" and s.path.is_file() and s.dis_type == "awgn"
    assert s.score == pytest.approx((2 + 1) % 9 + 0.5) and s.ref_path == tmp_path / "reference_images" / "I02.BMP"
    assert ds.samples[-1].dis_type == "sparse_sampling"
    assert ds[3][0].shape == (3, 9, 12)


@pytest.mark.parametrize("realigned", [True, False])
def test_live_layout(tmp_path, realigned):
    dmos = make_live(tmp_path, realigned)
    ds = D.LIVE(tmp_path, realigned=realigned)
    assert len(ds) == 982 - 197 and not ds.higher_is_better and ds.scale == (0.0, 100.0)
    by_path = {s.path: s for s in ds.samples}
    s = by_path[tmp_path / "jpeg" / "img2.bmp"]  # index 228 in the release order
    assert s.score == dmos[228] and s.group == LIVE_REFS[228 % 3] and s.dis_type == "jpeg"
    assert s.ref_path == tmp_path / "refimgs" / LIVE_REFS[0]
    assert tmp_path / "jp2k" / "img1.bmp" not in by_path  # index 0 is a reference (orgs = 1)
    assert by_path[tmp_path / "fastfading" / "img174.bmp"].score == dmos[981]
    image, score = ds[ds.paths.index(tmp_path / "jpeg" / "img2.bmp")]
    assert image.shape == (3, 9, 12) and score == dmos[228]


def test_csiq_layout(tmp_path):
    make_csiq(tmp_path)
    ds = D.CSIQ(tmp_path)
    assert len(ds) == 6 and not ds.higher_is_better and ds.scale == (0.0, 1.0)
    assert ds.paths[0] == tmp_path / "dst_imgs" / "awgn" / "1600.AWGN.1.png"
    assert ds.paths[2] == tmp_path / "dst_imgs" / "jpeg2000" / "bridge.jpeg2000.2.png"
    assert ds.samples[4].ref_path == tmp_path / "src_imgs" / "woman.png"
    np.testing.assert_array_equal(ds.scores, [r[5] for r in CSIQ_ROWS])
    assert sorted(set(ds.groups)) == ["1600", "bridge", "woman"]


# ---------------------------------------------------------------------------
# the real score tables


TABLES = {  # name: (rows, scale, higher_is_better, reference groups)
    "KonIQ-10k": (10073, (1.0, 5.0), True, None),
    "LIVE_Challenge": (1161, (0.0, 100.0), True, None),
    "SPAQ": (11125, (0.0, 100.0), True, None),
    "KADID-10k": (10125, (1.0, 5.0), True, 81),
    "TID2013": (3000, (0.0, 9.0), True, 25),
    "LIVE": (779, (0.0, 100.0), False, 29),
    "CSIQ": (866, (0.0, 1.0), False, 30),
}


@pytest.mark.parametrize("name", sorted(TABLES))
def test_shared_score_tables(shared_data, name):
    rows, scale, higher, refs = TABLES[name]
    ds = D.ScoreTable(shared_data / "scores" / "..", shared_data / "scores" / f"{name}.csv", check_files=False)
    assert len(ds) == rows and ds.scale == scale and ds.higher_is_better is higher
    assert ds.synthetic is (refs is not None)
    assert len(set(ds.groups)) == (refs if refs is not None else rows)
    if name != "LIVE":  # the realigned LIVE DMOS runs slightly outside 0..100
        assert scale[0] <= ds.scores.min() and ds.scores.max() <= scale[1]


def test_shared_table_known_row(shared_data):
    ds = D.ScoreTable(shared_data, shared_data / "scores" / "TID2013.csv", check_files=False)
    s = ds.samples[0]
    assert s.path == shared_data / "TID2013" / "distorted_images" / "i01_01_1.bmp"
    assert s.score == 5.5143 and s.dis_type == "AWGN"
    assert s.ref_path == shared_data / "TID2013" / "reference_images" / "i01.bmp"


def test_kadid_parser_on_real_table(shared_data, tmp_path):
    rows = _table(shared_data, "KADID-10k")
    _csv(tmp_path / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"],
         [[Path(r["dis_img_path"]).name, Path(r["ref_img_path"]).name, r["score"], 0] for r in rows])  # fmt: skip
    ds = D.KADID10k(tmp_path, check_files=False)
    assert len(ds) == 10125 and len(set(ds.groups)) == 81
    np.testing.assert_array_equal(ds.scores, [float(r["score"]) for r in rows])
    # one label of ours for each label of the table: the type code is parsed consistently
    pairs = {(s.dis_type, r["dis_type"]) for s, r in zip(ds.samples, rows)}
    assert len(pairs) == 25 == len({a for a, _ in pairs}) == len({b for _, b in pairs})


def test_tid2013_parser_on_real_table(shared_data, tmp_path):
    rows = _table(shared_data, "TID2013")
    (tmp_path / "mos_with_names.txt").write_text(
        "".join(f"{r['score']} {Path(r['dis_img_path']).name}\n" for r in rows)
    )
    ds = D.TID2013(tmp_path, check_files=False)
    assert len(ds) == 3000 and len(set(ds.groups)) == 25
    np.testing.assert_array_equal(ds.scores, [float(r["score"]) for r in rows])
    assert [s.group for s in ds.samples] == [Path(r["ref_img_path"]).stem.upper() for r in rows]


def test_csiq_paths_match_real_table(shared_data, tmp_path):
    rows = _table(shared_data, "CSIQ")
    kinds = {"AWGN": "noise", "JPEG": "jpeg", "JP2K": "jpeg 2000", "Pink_Noise": "fnoise", "GBLUR": "blur",
             "Contrast Dist.": "contrast"}  # fmt: skip
    body = []
    for r in rows:
        image, _, level, _ = Path(r["dis_img_path"]).name.split(".")
        body.append([image, 0, kinds[r["dis_type"]], level, 0, r["score"]])
    _csv(tmp_path / "csiq.DMOS.csv", ["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"], body)
    ds = D.CSIQ(tmp_path, check_files=False)
    assert len(ds) == 866 and len(set(ds.groups)) == 30
    ours = [str(p.relative_to(tmp_path)).lower() for p in ds.paths]
    theirs = [r["dis_img_path"].removeprefix("CSIQ/").lower() for r in rows]
    assert ours == theirs
    assert [str(s.ref_path.relative_to(tmp_path)) for s in ds.samples] == [
        r["ref_img_path"].removeprefix("CSIQ/") for r in rows
    ]


def test_koniq_parser_on_real_table(shared_data, tmp_path):
    rows = _table(shared_data, "KonIQ-10k")
    _csv(tmp_path / "koniq10k_scores_and_distributions.csv", ["image_name", "MOS", "SD"],
         [[Path(r["dis_img_path"]).name, r["score"], 0.5] for r in rows])  # fmt: skip
    ds = D.KonIQ10k(tmp_path, check_files=False)
    assert len(ds) == 10073 and ds.samples[0].path == tmp_path / "1024x768" / "10004473376.jpg"
    assert ds.samples[0].score == pytest.approx(3.82857142857143)


# ---------------------------------------------------------------------------
# generic CSV form: manifest.csv


def test_manifest_as_generic_dataset(shared_data):
    ds = D.CSVDataset(shared_data, scale=(0, 9), higher_is_better=True, where={"dataset": "TID2013"})
    with open(shared_data / "manifest.csv") as fh:
        expected = [r for r in csv.DictReader(fh) if r["dataset"] == "TID2013"]
    assert len(ds) == len(expected) == 2
    for (image, score), row in zip(ds, expected):
        assert image.ndim == 3 and image.shape[0] == 3 and 0 <= float(image.min()) <= float(image.max()) <= 1
        assert score == float(row["score"])
    assert ds.paths[0] == shared_data / expected[0]["file"]


def test_manifest_all_scored_rows_load_with_resize_crop_transform(shared_data):
    ds = D.CSVDataset(shared_data, scale=(0, 100), higher_is_better=True, skip_unscored=True,
                      resize=48, crop=32, transform=lambda x: 1 - x)  # fmt: skip
    with open(shared_data / "manifest.csv") as fh:
        assert len(ds) == sum(1 for r in csv.DictReader(fh) if r["score"])
    plain = D.CSVDataset(shared_data, scale=(0, 100), higher_is_better=True, skip_unscored=True, resize=48)
    image, _ = ds[0]
    full, _ = plain[0]
    assert image.shape == (3, 32, 32) and min(full.shape[1:]) == 48
    top, left = (full.shape[1] - 32) // 2, (full.shape[2] - 32) // 2
    torch.testing.assert_close(image, 1 - full[:, top : top + 32, left : left + 32])
    images, scores = next(iter(DataLoader(ds, batch_size=4)))
    assert images.shape == (4, 3, 32, 32) and scores.shape == (4,)


def test_manifest_unscored_rows_raise(shared_data):
    with pytest.raises(ValueError, match="empty score.*skip_unscored=True"):
        D.CSVDataset(shared_data, scale=(0, 100), higher_is_better=True)


# ---------------------------------------------------------------------------
# splits


@pytest.fixture(scope="module")
def kadid(tmp_path_factory) -> D.KADID10k:
    root = tmp_path_factory.mktemp("kadid")
    rows = [[f"I{r:02d}_{t:02d}_01.png", f"I{r:02d}.png", 1 + (r * t) % 4, 0] for r in range(1, 41) for t in (1, 2, 3)]
    _csv(root / "dmos.csv", ["dist_img", "ref_img", "dmos", "var"], rows)
    return D.KADID10k(root, check_files=False)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 10), min_size=1, max_size=4).filter(lambda w: sum(w) > 0), st.integers(0, 2**31))
def test_split_by_reference(kadid, weights, seed):
    fractions = [w / sum(weights) for w in weights]
    parts = kadid.split_indices(fractions, seed)
    assert sorted(i for p in parts for i in p) == list(range(len(kadid)))
    groups = [{kadid.samples[i].group for i in p} for p in parts]
    for a in range(len(parts)):
        for b in range(a + 1, len(parts)):
            assert not groups[a] & groups[b]
    for g, f in zip(groups, fractions):
        assert abs(len(g) - f * 40) <= 1
    assert parts == kadid.split_indices(fractions, seed)


def test_split_seed_changes_and_subsets_keep_metadata(kadid):
    a = kadid.split((0.5, 0.5), seed=1)
    b = kadid.split((0.5, 0.5), seed=2)
    assert a[0].paths != b[0].paths
    assert isinstance(a[0], D.KADID10k) and a[0].scale == kadid.scale and len(a[0]) + len(a[1]) == len(kadid)


def test_authentic_split_is_by_image(tmp_path):
    make_koniq(tmp_path)
    parts = D.KonIQ10k(tmp_path).split_indices((1 / 3, 1 / 3, 1 / 3), seed=0)
    assert sorted(len(p) for p in parts) == [1, 1, 1]


@pytest.mark.parametrize("fractions", [(0.5, 0.6), (-0.1, 1.1), (float("nan"), 1.0), ()])
def test_split_bad_fractions(kadid, fractions):
    with pytest.raises(ValueError, match="fractions"):
        kadid.split_indices(fractions)


def test_split_too_few_groups(tmp_path):
    make_koniq(tmp_path)
    with pytest.raises(ValueError, match="3 distinct reference group"):
        D.KonIQ10k(tmp_path).split_indices((0.25, 0.25, 0.25, 0.25))


# ---------------------------------------------------------------------------
# error paths

MAKERS = {D.KonIQ10k: make_koniq, D.CLIVE: make_clive, D.SPAQ: make_spaq, D.KADID10k: make_kadid,
          D.TID2013: make_tid, D.LIVE: make_live, D.CSIQ: make_csiq}  # fmt: skip
EXPECTED_FILE = {D.KonIQ10k: "koniq10k_scores_and_distributions.csv", D.CLIVE: "AllImages_release.mat",
                 D.SPAQ: "MOS and Image attribute scores", D.KADID10k: "dmos.csv", D.TID2013: "mos_with_names.txt",
                 D.LIVE: "dmos_realigned.mat", D.CSIQ: "csiq.DMOS"}  # fmt: skip


@pytest.mark.parametrize("cls", list(MAKERS), ids=lambda c: c.__name__)
def test_missing_root_and_score_file(tmp_path, cls):
    with pytest.raises(FileNotFoundError, match="does not exist.*" + cls.url.replace(".", r"\.")):
        cls(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=EXPECTED_FILE[cls] + ".*" + cls.url.replace(".", r"\.")):
        cls(tmp_path)


def test_live_missing_refnames(tmp_path):
    make_live(tmp_path)
    (tmp_path / "refnames_all.mat").unlink()
    with pytest.raises(FileNotFoundError, match="refnames_all.mat"):
        D.LIVE(tmp_path)


@pytest.mark.parametrize("cls", [c for c in MAKERS if c is not D.LIVE], ids=lambda c: c.__name__)
def test_missing_images(tmp_path, cls):
    MAKERS[cls](tmp_path)
    victim = cls(tmp_path).paths[-1]
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=rf"1 of \d+ listed images are missing, e\.g\. .*{victim.name}"):
        cls(tmp_path)
    assert len(cls(tmp_path, check_files=False)) == len(cls(tmp_path, check_files=False).samples)


def test_missing_column_and_bad_number(tmp_path):
    _csv(tmp_path / "dmos.csv", ["dist_img", "ref_img", "score"], [["I01_01_01.png", "I01.png", 3]])
    with pytest.raises(ValueError, match=r"missing column\(s\) \['dmos'\]"):
        D.KADID10k(tmp_path, check_files=False)
    _csv(tmp_path / "dmos.csv", ["dist_img", "ref_img", "dmos"], [["I01_01_01.png", "I01.png", "n/a"]])
    with pytest.raises(ValueError, match="row 2: expected a number, got 'n/a'"):
        D.KADID10k(tmp_path, check_files=False)
    _csv(tmp_path / "dmos.csv", ["dist_img", "ref_img", "dmos"], [["I01_01_01.png", "I01.png", "inf"]])
    with pytest.raises(ValueError, match="expected a finite number"):
        D.KADID10k(tmp_path, check_files=False)


def test_bad_names_and_codes(tmp_path):
    _csv(tmp_path / "dmos.csv", ["dist_img", "ref_img", "dmos"], [["photo.png", "I01.png", 3]])
    with pytest.raises(ValueError, match="not like I01_01_01.png"):
        D.KADID10k(tmp_path, check_files=False)
    _csv(tmp_path / "dmos.csv", ["dist_img", "ref_img", "dmos"], [["I01_26_01.png", "I01.png", 3]])
    with pytest.raises(ValueError, match="distortion code 26 is outside 1..25"):
        D.KADID10k(tmp_path, check_files=False)
    (tmp_path / "mos_with_names.txt").write_text("5.0 i01_01_1.bmp extra\n")
    with pytest.raises(ValueError, match="line 1: expected '<MOS> <image name>'"):
        D.TID2013(tmp_path, check_files=False)
    (tmp_path / "mos_with_names.txt").write_text("5.0 i01_01_1.bmp\n\n5.0 x.bmp\n")
    with pytest.raises(ValueError, match="line 3: image name 'x.bmp' is not like"):
        D.TID2013(tmp_path, check_files=False)


def test_csiq_unknown_type(tmp_path):
    _csv(tmp_path / "csiq.DMOS.csv", ["image", "dst_type", "dst_lev", "dmos"], [["1600", "ringing", 1, 0.2]])
    with pytest.raises(ValueError, match="unknown dst_type 'ringing'"):
        D.CSIQ(tmp_path, check_files=False)


def test_mat_errors(tmp_path):
    make_clive(tmp_path)
    savemat(tmp_path / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([[1.0, 2.0]])})
    with pytest.raises(ValueError, match="lists 5 images but .* 2 scores"):
        D.CLIVE(tmp_path)
    savemat(tmp_path / "Data" / "AllMOS_release.mat", {"mos": np.array([[1.0]])})
    with pytest.raises(ValueError, match=r"expected variable 'AllMOS_release', found \['mos'\]"):
        D.CLIVE(tmp_path)
    savemat(tmp_path / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([[1.0, 2, 3, np.nan, 5]])})
    with pytest.raises(ValueError, match="non-finite"):
        D.CLIVE(tmp_path)
    (tmp_path / "Data" / "AllMOS_release.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ValueError, match="not a readable MATLAB"):
        D.CLIVE(tmp_path)


def test_live_wrong_length(tmp_path):
    make_live(tmp_path, n=981)
    with pytest.raises(ValueError, match="expected 982 entries"):
        D.LIVE(tmp_path, check_files=False)


def test_empty_and_headerless_tables(tmp_path):
    _csv(tmp_path / "dmos.csv", ["dist_img", "ref_img", "dmos"], [])
    with pytest.raises(ValueError, match="lists no scored images"):
        D.KADID10k(tmp_path)
    (tmp_path / "dmos.csv").write_text("only\n")
    with pytest.raises(ValueError, match="no header row"):
        D.KADID10k(tmp_path)


def test_generic_csv_errors(tmp_path):
    _csv(tmp_path / "t.csv", ["path", "mos"], [["a.png", 1]])
    with pytest.raises(ValueError, match="min < max"):
        D.CSVDataset(tmp_path, tmp_path / "t.csv", scale=(5, 5), higher_is_better=True)
    with pytest.raises(FileNotFoundError, match="score table .*missing.csv does not exist"):
        D.CSVDataset(tmp_path, tmp_path / "missing.csv", scale=(0, 5), higher_is_better=True)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['file', 'score'\]"):
        D.CSVDataset(tmp_path, tmp_path / "t.csv", scale=(0, 5), higher_is_better=True)
    with pytest.raises(ValueError, match="unknown database 'mine'.*scale"):
        D.ScoreTable(tmp_path, tmp_path / "mine.csv")
    _image(tmp_path / "a.png")
    ds = D.CSVDataset(tmp_path, tmp_path / "t.csv", scale=(0, 5), higher_is_better=False, path_column="path",
                      score_column="mos")  # fmt: skip
    assert ds[0][1] == 1.0 and not ds.higher_is_better and ds.groups == ["a.png"]


def test_crop_errors(tmp_path):
    make_koniq(tmp_path)
    with pytest.raises(ValueError, match="crop must be"):
        D.KonIQ10k(tmp_path, crop=0)
    with pytest.raises(ValueError, match="cannot crop 20x20 from a 9x12 image"):
        D.KonIQ10k(tmp_path, crop=20)[0]
    assert D.KonIQ10k(tmp_path, crop=(4, 6))[0][0].shape == (3, 4, 6)


def test_csiq_xlsx_sheet_with_openpyxl(tmp_path):
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    book.active.title = "all_by_distortion"
    book.active.append(["nothing", "useful"])
    sheet = book.create_sheet("all_by_image")
    sheet.append(["CSIQ DMOS"])  # a title line above the header
    sheet.append([None, "image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"])
    sheet.append([None, 1600, 1, "noise", 1, 0.01, 0.062])
    book.save(tmp_path / "csiq.DMOS.xlsx")
    ds = D.CSIQ(tmp_path, check_files=False)
    assert ds.paths == [tmp_path / "dst_imgs" / "awgn" / "1600.AWGN.1.png"] and ds.scores.tolist() == [0.062]
