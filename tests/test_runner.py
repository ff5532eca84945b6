"""The certification engine (certiqa.runner), in process: rows streamed to disk with
their provenance, resume (torn lines, other settings), signals, failures of single
images, the noise-buffer limit, duplicates, the flatness warning. Runs that are
really killed, and torchrun, are in test_runner_processes.py."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import certiqa
from certiqa import SmoothedIQA
from certiqa.cli import main
from certiqa.distributed import Group, join
from certiqa.runner import (
    ENVIRONMENT_COLUMNS,
    RESULT_COLUMNS,
    RunRefused,
    certify_paths,
    flatness_warning,
    image_noise_seed,
)

PROVENANCE = {"model": "mean", "model_sha256": "ab" * 32, "lower_better": False, "score_range": [0.0, 100.0],
              "denoiser": None, "denoiser_sha256": None}
RADII = [0.02, 0.05]


class MeanScore(torch.nn.Module):
    """100 x the mean pixel (clean scores known in closed form). Counts its calls and runs
    ``hook(x)`` first on each, so tests can look at the disk or fail on chosen images."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.hook = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.hook is not None:
            self.hook(x)
        return 100 * x.mean(dim=(1, 2, 3))


def make_images(folder: Path, count: int, size: tuple[int, int] = (40, 48)) -> list[Path]:
    """``count`` RGB PNGs of distinct brightness (so their clean scores differ)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        path = folder / f"im{i}.png"
        Image.fromarray((rng.random((*size, 3)) * 255 * (i + 1) / count).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def smoothed_mean(model: MeanScore | None = None, **kwargs) -> SmoothedIQA:
    settings = {"n": 16, "alpha": 0.2, "seed": 0, **kwargs}
    return SmoothedIQA(model or MeanScore(), settings.pop("sigma", 0.12), **settings)


def run(smoothed: SmoothedIQA, paths, out: Path | None, **kwargs):
    kwargs.setdefault("provenance", PROVENANCE)
    kwargs.setdefault("progress", False)
    kwargs.setdefault("log", lambda message: None)
    return certify_paths(smoothed, [str(p) for p in paths], RADII, out=out, **kwargs)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def certificates(rows: list[dict]) -> list[dict]:
    """Rows without the seconds each image took (the only column that changes between runs)."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def clean_index(x: torch.Tensor, paths: list[Path]) -> int | None:
    """Which image a one-image (clean) forward pass is about, from its exact mean; None for noisy batches."""
    if x.shape[0] != 1:
        return None
    means = [np.asarray(Image.open(p), dtype=np.float32).mean() / 255 for p in paths]
    return int(np.argmin([abs(float(x.mean()) - m) for m in means]))


def test_rows_carry_clean_score_shift_and_provenance(tmp_path):
    paths = make_images(tmp_path / "imgs", 3)
    smoothed = smoothed_mean()
    result = run(smoothed, paths, tmp_path / "r.csv")
    rows = read_csv(tmp_path / "r.csv")
    assert list(rows[0]) == [*RESULT_COLUMNS, *PROVENANCE, *ENVIRONMENT_COLUMNS]
    assert [r["path"] for r in rows] == [str(p) for p in paths for _ in RADII]
    assert [float(r["eps"]) for r in rows] == RADII * 3
    for row, typed in zip(rows, result.rows):
        path = Path(row["path"])
        expected_clean = np.asarray(Image.open(path), dtype=np.float64).mean() / 255 * 100
        assert abs(float(row["clean"]) - expected_clean) < 1e-4
        assert float(row["shift"]) == float(row["median"]) - float(row["clean"])
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert row["image_sha256"] == digest
        assert (row["model"], row["model_sha256"], row["lower_better"], row["score_range"], row["denoiser"]) == (
            "mean", "ab" * 32, "False", "[0.0, 100.0]", "")
        assert (row["sigma"], row["n"], row["alpha"], row["seed"], row["resize"]) == ("0.12", "16", "0.2", "0", "")
        assert (row["batch_size"], row["frames"], row["resized_from"]) == ("32", "1", "")
        assert (row["requested_batch"], row["max_noise_bytes"]) == ("32", str(2 << 30))
        assert (row["device"], row["torch"], row["certiqa"]) == ("cpu", torch.__version__, certiqa.__version__)
        # the image's noise comes from (seed, file SHA-256) only: sample() with that seed gives the same median
        x = torch.from_numpy(np.asarray(Image.open(path), dtype=np.float32) / 255).permute(2, 0, 1)[None]
        samples = smoothed.sample(x, seed=image_noise_seed(0, digest))
        assert float(row["median"]) == float(samples[0, 7])  # y_(ceil(16 / 2))
        assert typed["median"] == float(row["median"]) and typed["certified"] == (row["certified"] == "True")
    assert result.exit_status == 0 and result.certified == 3 and result.resumed == 0


def test_image_noise_seed_is_the_seed_then_the_digest_words():
    digest = "00000001" + "ffffffff" + "0" * 48
    assert image_noise_seed(7, digest) == [7, 1, 2**32 - 1, 0, 0, 0, 0, 0, 0]


def test_each_image_is_on_disk_before_the_next_starts(tmp_path):
    paths = make_images(tmp_path / "imgs", 4)
    model = MeanScore()
    lines_at_clean_pass = []
    out = tmp_path / "r.csv"
    model.hook = lambda x: lines_at_clean_pass.append(len(out.read_text().splitlines())) if x.shape[0] == 1 else None
    run(smoothed_mean(model), paths, out)
    assert lines_at_clean_pass == [1, 3, 5, 7]  # the header, then two rows per finished image


def test_jsonl_streams_and_json_is_written_at_the_end(tmp_path):
    paths = make_images(tmp_path / "imgs", 3)
    reference = run(smoothed_mean(), paths, tmp_path / "r.csv").rows
    out = tmp_path / "r.jsonl"
    run(smoothed_mean(), paths, out)
    assert certificates([json.loads(line) for line in out.read_text().splitlines()]) == certificates(reference)

    out = tmp_path / "r.json"
    partial = tmp_path / "r.json.partial.jsonl"
    out.write_text("[]\n")  # an older result replaced (overwrite) is removed at the start, never left looking current
    model = MeanScore()
    seen = []
    model.hook = lambda x: seen.append((out.exists(), partial.read_text().count("\n"))) if x.shape[0] == 1 else None
    run(smoothed_mean(model), paths, out, overwrite=True)
    assert seen == [(False, 0), (False, 2), (False, 4)]
    assert certificates(json.loads(out.read_text())) == certificates(reference)
    assert not partial.exists()


def test_torn_last_line_and_cut_image_are_redone(tmp_path):
    paths = make_images(tmp_path / "imgs", 4)
    out = tmp_path / "r.csv"
    run(smoothed_mean(), paths, out)
    full = out.read_bytes()
    for cut in (full[:-7], full[: full[:-1].rfind(b"\n") + 1]):  # a torn line; an image with one of its two rows
        out.write_bytes(cut)
        model, messages = MeanScore(), []
        result = run(smoothed_mean(model), paths, out, resume=True, log=messages.append)
        assert model.calls == 2  # one image redone: its clean pass and one batch of 16 noisy copies
        assert (result.resumed, result.certified) == (3, 1)
        assert messages == [f"resuming {out}: 3 image(s) already certified there, 1 to go."]
        assert certificates(read_csv(out)) == certificates(read_csv_bytes(full, tmp_path))
        assert [r["seconds"] for r in read_csv(out)][:6] == [r["seconds"] for r in read_csv_bytes(full, tmp_path)][:6]


def read_csv_bytes(data: bytes, tmp_path: Path) -> list[dict[str, str]]:
    copy = tmp_path / "copy.csv"
    copy.write_bytes(data)
    return read_csv(copy)


def test_resume_refuses_other_settings_and_foreign_files(tmp_path):
    paths = make_images(tmp_path / "imgs", 2)
    out = tmp_path / "r.csv"
    run(smoothed_mean(), paths, out)
    before = out.read_bytes()
    model = MeanScore()
    with pytest.raises(RunRefused, match=r"sigma: file 0\.12, this run 0\.25; seed: file 0, this run 1\)"):
        run(smoothed_mean(model, sigma=0.25, seed=1), paths, out, resume=True)
    with pytest.raises(RunRefused, match=r"model_sha256: file (ab)+, this run (cd)+\)"):
        run(smoothed_mean(model), paths, out, resume=True, provenance={**PROVENANCE, "model_sha256": "cd" * 32})
    with pytest.raises(RunRefused, match=r"eps: file 0\.02 0\.05, this run 0\.05\)"):
        certify_paths(smoothed_mean(model), paths, 0.05, out=out, resume=True, provenance=PROVENANCE,
                      progress=False)
    with pytest.raises(RunRefused, match=r"n: file 16, this run 8"):
        run(smoothed_mean(model, n=8), paths, out, resume=True)
    assert model.calls == 0 and out.read_bytes() == before
    out.write_text("a,b\n1,2\n")
    with pytest.raises(RunRefused, match="no path and eps columns; it is not a certiqa results file"):
        run(smoothed_mean(model), paths, out, resume=True)
    out.write_text(before.decode().replace("\n", "\nnot,a,row\n", 1))
    with pytest.raises(RunRefused, match=r"r\.csv, line 2: not a row certiqa wrote"):
        run(smoothed_mean(model), paths, out, resume=True)
    assert model.calls == 0


def test_unwritable_out_is_refused_before_any_work(tmp_path, capsys):
    paths = make_images(tmp_path / "imgs", 2)
    (tmp_path / "file").write_text("not a folder")
    model = MeanScore()
    for out in (tmp_path / "file" / "r.csv", tmp_path / "file" / "r.json"):
        with pytest.raises(RunRefused, match=f"cannot write --out {out}: {tmp_path / 'file'} is a file, not a folder"):
            run(smoothed_mean(model), paths, out)
    assert model.calls == 0
    with pytest.raises(SystemExit, match="certiqa: error: cannot write --out"):
        main(["certify", str(paths[0]), "-n", "8", "--quiet", "--out", str(tmp_path / "file" / "r.csv")])
    assert capsys.readouterr().out == ""
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(RunRefused, match=r"cannot write --out .*folder\.csv: Is a directory \(IsADirectoryError\)"):
        run(smoothed_mean(model), paths, tmp_path / "folder.csv")
    assert model.calls == 0


def test_same_file_given_twice_is_certified_once(tmp_path):
    paths = make_images(tmp_path / "imgs", 2)
    model, messages = MeanScore(), []
    twice = [paths[0], paths[1], paths[0], tmp_path / "imgs" / "." / "im1.png"]
    result = run(smoothed_mean(model), twice, tmp_path / "r.csv", log=messages.append)
    assert [r["path"] for r in read_csv(tmp_path / "r.csv")] == [str(paths[0])] * 2 + [str(paths[1])] * 2
    assert model.calls == 4 and result.certified == 2
    assert messages == [f"note: {twice[2]} is given more than once; it is certified once.",
                        f"note: {twice[3]} is given more than once; it is certified once."]


def test_failing_images_are_reported_and_the_run_goes_on(tmp_path):
    paths = make_images(tmp_path / "imgs", 4)
    (tmp_path / "imgs" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    Image.new("RGB", (20, 20)).save(tmp_path / "imgs" / "tiny.png")

    def fail(x: torch.Tensor) -> None:
        index = clean_index(x, paths)
        if index == 1:
            raise RuntimeError("boom")
        if index == 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    model, messages = MeanScore(), []
    model.hook = fail
    listed = [*paths, tmp_path / "imgs" / "corrupt.png", tmp_path / "imgs" / "tiny.png"]
    result = run(smoothed_mean(model), listed, tmp_path / "r.csv", min_size=33, log=messages.append)
    assert result.errors == [
        f"{paths[1]}: RuntimeError: boom",
        f"{paths[2]}: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB); lower --batch-size or "
        "--max-noise-mb, or resize the image.",
        f"{listed[4]}: not a readable image file.",
        f"{listed[5]}: 20x20 pixels is smaller than the 33x33 the model needs.",
    ]
    assert messages == [f"error: {e}" for e in result.errors]
    assert [r["path"] for r in read_csv(tmp_path / "r.csv")] == [str(paths[0])] * 2 + [str(paths[3])] * 2
    assert result.exit_status == 1 and result.certified == 2


def test_a_model_with_integer_scores_is_certified(tmp_path):
    """Integer scores are exact in float64 (SmoothedIQA.sample): the rows hold whole numbers."""
    paths = make_images(tmp_path / "imgs", 1)
    integer_model = lambda x: (100 * x.mean(dim=(1, 2, 3))).long()  # noqa: E731
    result = run(SmoothedIQA(integer_model, 0.12, n=16, alpha=0.2, seed=0), paths, tmp_path / "r.csv")
    assert not result.errors and len(result.rows) == 2
    expected_clean = int(100 * float(torch.from_numpy(np.asarray(Image.open(paths[0]), dtype=np.float32) / 255).mean()))
    for row in read_csv(tmp_path / "r.csv"):
        assert float(row["clean"]) == expected_clean
        assert all(float(row[k]).is_integer() for k in ("median", "lower", "upper", "shift"))


def test_noise_buffer_limit_lowers_the_batch_or_refuses(tmp_path):
    paths = make_images(tmp_path / "imgs", 1)  # 40x48: one noisy copy is 3 * 40 * 48 * 4 = 23040 bytes
    messages = []
    smoothed = smoothed_mean()
    result = run(smoothed, paths, tmp_path / "r.csv", max_noise_bytes=3 * 23040 + 5, log=messages.append)
    assert [row["batch_size"] for row in result.rows] == [3, 3]
    assert [(row["requested_batch"], row["max_noise_bytes"]) for row in result.rows] == [(32, 3 * 23040 + 5)] * 2
    resumed = run(smoothed, paths, tmp_path / "r.csv", max_noise_bytes=3 * 23040 + 5, resume=True)
    assert resumed.resumed == 1 and resumed.certified == 0  # the lowered batch is no other setting
    assert messages == [f"note: {paths[0]}: batch lowered from 32 to 3 so that the noise buffer of this 40x48 image "
                        "stays within 67.5 KiB (column batch_size)."]
    x = torch.from_numpy(np.asarray(Image.open(paths[0]), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    seed = image_noise_seed(0, hashlib.sha256(paths[0].read_bytes()).hexdigest())
    assert result.rows[0]["median"] == float(smoothed_mean(batch_size=3).sample(x, seed=seed)[0, 7])
    result = run(smoothed, paths, None, max_noise_bytes=23039)
    assert result.errors == [f"{paths[0]}: one noisy copy of this 40x48 image takes 22.5 KiB, more than the "
                             "noise-buffer limit of 22.5 KiB; resize the image or raise the limit (--max-noise-mb)."]


@pytest.mark.parametrize("signum, suffix", [(signal.SIGINT, ".csv"), (signal.SIGTERM, ".json")])
def test_a_signal_drops_the_current_image_keeps_the_rest_and_resume_finishes(tmp_path, signum, suffix):
    paths = make_images(tmp_path / "imgs", 4)
    reference = run(smoothed_mean(), paths, tmp_path / f"ref{suffix}").rows
    out = tmp_path / f"r{suffix}"
    model, messages = MeanScore(), []
    model.hook = lambda x: os.kill(os.getpid(), signum) if clean_index(x, paths) == 2 else None
    result = run(smoothed_mean(model), paths, out, log=messages.append)
    assert result.interrupted == signum and result.exit_status == 128 + signum
    assert (result.certified, result.remaining) == (2, 2)
    name = signal.Signals(signum).name
    assert messages == [f"interrupted by {name}: 2 image(s) certified by this run, 2 not; they are kept in {out}; "
                        "run the same command again with --resume to certify the rest."]
    kept = read_csv(out) if suffix == ".csv" else json.loads(out.read_text())
    assert [r["path"] for r in kept] == [str(p) for p in paths[:2] for _ in RADII]
    assert not Path(f"{out}.partial.jsonl").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    model = MeanScore()
    result = run(smoothed_mean(model), paths, out, resume=True)
    assert model.calls == 4 and result.exit_status == 0
    assert certificates(result.rows) == certificates(reference)


def test_flatness_warning_threshold():
    def rows(medians, cleans):
        return [{"path": f"p{i}", "median": m, "clean": c} for i, (m, c) in enumerate(zip(medians, cleans))]

    score_range = (0, 100)
    assert flatness_warning(rows([50, 59, 55], [0, 100, 50]), score_range=score_range).startswith(
        "the smoothed medians of 3 images span 9 while their clean scores span 100 (9.0%, under 10%): "
        "the smoothed model has gone flat")
    assert "(--denoiser)" in flatness_warning(rows([50, 59, 55], [0, 100, 50]), score_range=score_range)
    assert flatness_warning(rows([50, 60, 55], [0, 100, 50]), score_range=score_range) is None  # exactly 10 %: not flat
    assert flatness_warning(rows([50, 50, 50], [3, 3, 3]), score_range=score_range) is None  # clean scores do not spread
    assert flatness_warning(rows([50], [0]), score_range=score_range) is None


def test_a_flat_smoothed_model_is_warned_about(tmp_path):
    paths = make_images(tmp_path / "imgs", 2)
    for i in range(2):  # two flat images: the model below gives them 100, noise or not aside
        Image.new("RGB", (40, 48), (100 + 50 * i,) * 3).save(tmp_path / "imgs" / f"flat{i}.png")
    flat_detector = lambda x: 100.0 * (x.std(dim=(1, 2, 3)) < 0.05)  # noqa: E731  noisy copies all score 0
    messages = []
    run(SmoothedIQA(flat_detector, 0.12, n=16, alpha=0.2, seed=0), sorted((tmp_path / "imgs").iterdir()), None,
        log=messages.append)
    assert messages == ["warning: the smoothed medians of 4 images span 0 while their clean scores span 100 (0.0%, "
                        "under 10%): the smoothed model has gone flat, so its certified intervals say little about "
                        "the model. Put a denoiser trained for this sigma in front (--denoiser), or choose a smaller "
                        "--sigma with the sigma sweep (see the README)."]


def test_animated_gif_first_frame_is_certified_and_said(tmp_path):
    frames = [Image.new("RGB", (40, 48), (v, v, v)) for v in (30, 200, 90)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    messages = []
    result = run(smoothed_mean(), [tmp_path / "anim.gif"], None, log=messages.append)
    assert messages == [f"note: {tmp_path / 'anim.gif'}: 3 frames; only the first was certified (column frames)."]
    assert result.rows[0]["frames"] == 3 and abs(result.rows[0]["clean"] - 100 * 30 / 255) < 1e-4


def test_resume_and_torchrun_need_an_output_file(tmp_path):
    paths = make_images(tmp_path / "imgs", 1)
    with pytest.raises(RunRefused, match="--resume and torchrun runs need --out"):
        run(smoothed_mean(), paths, None, resume=True)
    with pytest.raises(RunRefused, match="--resume and torchrun runs need --out"):
        run(smoothed_mean(), paths, None, group=Group(rank=0, world_size=2))
    with pytest.raises(ValueError, match="extra and provenance columns must be new and distinct, got \\['median'\\]"):
        run(smoothed_mean(), paths, None, provenance={"median": 1})


def test_join_outside_torchrun_and_its_errors(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert join(torch.device("cpu")) == (Group(), torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="WORLD_SIZE=2 is set but RANK is not; start the processes with torchrun"):
        join(torch.device("cpu"))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", str(torch.cuda.device_count()))  # one past the last GPU
    with pytest.raises(ValueError, match=f"has {torch.cuda.device_count()} CUDA device\\(s\\)"):
        join(torch.device("cuda"))
