"""The certiqa command line, end to end on real images (cropped small to keep it fast)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from PIL import Image

from certiqa.cli import main

from conftest import REPO

WEIGHTS = "models/cnniqa-live.pt"


@pytest.fixture
def image_folder(shared_data, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("labelled/live_img66.png", "reference/tid2013_I01.png"):
        Image.open(shared_data / "images" / name).crop((0, 0, 96, 80)).save(folder / name.split("/")[1])
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.new("RGB", (20, 20)).save(folder / "tiny.png")
    return folder


def test_certify_folder_with_bad_files(image_folder, shared_data, tmp_path, capsys):
    out = tmp_path / "results.csv"
    args = ["certify", str(image_folder), "--weights", str(shared_data / WEIGHTS), "--n", "30",
            "--alpha", "0.1", "--seed", "0", "--quiet", "--out", str(out)]
    assert main(args) == 1  # some files failed
    captured = capsys.readouterr()
    assert "corrupt.png: not a readable image file" in captured.err
    assert "tiny.png: 20x20 pixels is smaller than the 33x33" in captured.err
    assert "live_img66.png" in captured.out and "tid2013_I01.png" in captured.out
    rows = list(csv.DictReader(out.open()))
    assert [r["path"].rsplit("/", 1)[1] for r in rows] == ["live_img66.png", "tid2013_I01.png"]
    for row in rows:
        assert float(row["lower"]) <= float(row["median"]) <= float(row["upper"])
        assert row["eps"] == "0.05" and row["sigma"] == "0.12" and row["n"] == "30" and row["alpha"] == "0.1"
        assert float(row["seconds"]) > 0


def test_certify_json_output_and_success_status(image_folder, shared_data, tmp_path):
    out = tmp_path / "r.json"
    good = image_folder / "live_img66.png"
    args = ["certify", str(good), "--weights", str(shared_data / WEIGHTS), "--n", "30", "--alpha", "0.1",
            "--eps", "0.02", "--quiet", "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    (row,) = json.loads(out.read_text())
    assert row["certified"] is True and row["eps"] == 0.02


def test_several_radii_share_one_sample_set(image_folder, shared_data, tmp_path):
    out = tmp_path / "r.json"
    args = ["certify", str(image_folder / "live_img66.png"), "--weights", str(shared_data / WEIGHTS), "--n", "40",
            "--alpha", "0.1", "--eps", "0.0", "0.02", "0.1", "--seed", "1", "--quiet", "--out", str(out)]
    assert main(args) == 0
    rows = json.loads(out.read_text())
    assert [r["eps"] for r in rows] == [0.0, 0.02, 0.1]
    assert len({r["median"] for r in rows}) == 1  # the same samples
    widths = [r["width"] for r in rows]
    assert widths == sorted(widths)


def test_cli_errors(shared_data, tmp_path, capsys):
    weights = str(shared_data / WEIGHTS)
    with pytest.raises(SystemExit, match="no such file or folder"):
        main(["certify", str(tmp_path / "nope.png"), "--weights", weights])
    with pytest.raises(SystemExit, match="no image files found"):
        main(["certify", str(tmp_path), "--weights", weights])
    with pytest.raises(SystemExit, match="sigma must be"):
        main(["certify", str(tmp_path), "--weights", weights, "--sigma", "0"])
    with pytest.raises(SystemExit, match="no such file"):
        main(["certify", str(tmp_path), "--weights", str(tmp_path / "w.pt")])
    Image.new("RGB", (40, 40)).save(tmp_path / "a.png")
    for eps, shown in (("-1", "-1.0"), ("inf", "inf"), ("nan", "nan")):
        with pytest.raises(SystemExit, match=f"--eps must be a finite number >= 0 .*got {shown}\\.$"):
            main(["certify", str(tmp_path), "--weights", weights, "--eps", "0.1", eps])
    with pytest.raises(SystemExit, match="seed must be >= 0"):
        main(["certify", str(tmp_path), "--weights", weights, "--quiet", "--seed", "-1"])
    with pytest.raises(SystemExit, match=r"must end in \.csv, \.jsonl or \.json"):
        main(["certify", str(tmp_path), "--weights", weights, "--quiet", "--out", str(tmp_path / "r.txt")])
    assert capsys.readouterr().out == ""  # refused before any image was certified


@pytest.mark.parametrize("text", ["hello weights\n", "these are not weights\n"])  # KeyError, IndexError inside torch
def test_a_text_file_as_weights_gets_a_clear_message(tmp_path, text):
    (tmp_path / "w.txt").write_text(text)
    Image.new("RGB", (40, 40)).save(tmp_path / "a.png")
    with pytest.raises(SystemExit, match=r"w\.txt' is not a PyTorch file \(neither a zip archive nor a pickle\), so it "
                                         r"cannot be read as the model; expected a state dict written by "
                                         r"torch\.save\(model\.state_dict\(\)\)\.$"):
        main(["certify", str(tmp_path / "a.png"), "--weights", str(tmp_path / "w.txt"), "--quiet"])

def test_weights_is_short_for_model_cnniqa(image_folder, shared_data, tmp_path):
    rows = {}
    for name, option in (("weights", ["--weights", str(shared_data / WEIGHTS)]),
                         ("model", ["--model", f"cnniqa:{shared_data / WEIGHTS}"])):
        out = tmp_path / f"{name}.json"
        args = ["certify", str(image_folder / "live_img66.png"), *option, "--n", "20", "--alpha", "0.1",
                "--seed", "3", "--quiet", "--out", str(out)]
        assert main(args) == 0
        rows[name] = [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads(out.read_text())]
    assert rows["weights"] == rows["model"]


def test_model_option_errors(shared_data, tmp_path):
    weights = str(shared_data / WEIGHTS)
    Image.new("RGB", (40, 40)).save(tmp_path / "a.png")
    with pytest.raises(SystemExit, match=r"^certiqa: error: model spec 'no_such_module_xyz:f': cannot import module"):
        main(["certify", str(tmp_path), "--model", "no_such_module_xyz:f"])
    with pytest.raises(SystemExit, match="give --model or --weights, not both"):
        main(["certify", str(tmp_path), "--model", "default", "--weights", weights])
    with pytest.raises(SystemExit, match="--denoiser pretrained was trained for the default model"):
        main(["certify", str(tmp_path), "--weights", weights, "--denoiser", "pretrained", "--quiet"])
    with pytest.raises(SystemExit, match=r"score_range from the arguments must be a pair .* lo < hi, got \(1\.0, 0\.0\)"):
        main(["certify", str(tmp_path), "--score-range", "1", "0"])


def test_python_dash_m_entry_point():
    done = subprocess.run([sys.executable, "-m", "certiqa", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("certiqa ")


def test_certify_set_script_summarises_a_scored_set(shared_data, tmp_path):
    out = tmp_path / "set.csv"
    done = subprocess.run(
        [sys.executable, "certify/certify_set.py", str(shared_data), "--weights", str(shared_data / WEIGHTS),
         "--where", "dataset=LIVE-jpeg", "--scale", "0", "1", "--eps", "0.02", "0.1", "--n", "20",
         "--alpha", "0.1", "--resize", "64", "--limit", "4", "--device", "cpu", "--out", str(out)],
        capture_output=True, text=True, cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "| 0.02 | 4 | 4 |" in done.stdout and "| 0.1 | 4 | 4 |" in done.stdout
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 8 and all(r["resized_from"] and r["score"] for r in rows)
