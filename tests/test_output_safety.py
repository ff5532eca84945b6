"""What keeps a results file safe and true (certiqa.runner, certiqa.locking): the lock
against a second run (held by a real second process, also after a SIGKILL), the refusal
to replace an existing output, a full disk (a patched writer and a real 16 KiB tmpfs),
what --resume checks (batch size, noise limit, changed images, cells that are not
numbers), and the warnings for medians outside the score range and for flatness."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from certiqa.cli import main
from certiqa.locking import LockHeld, OutputLock, lock_path
from certiqa.runner import FLAT_MIN_SPAN, RunRefused, flatness_warning, image_noise_seed, range_warning
from certiqa import locking, runner

from conftest import REPO
from test_runner import MeanScore, certificates, make_images, read_csv, run, smoothed_mean

ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
HOLD = ("import sys, time; from certiqa.locking import OutputLock; OutputLock(sys.argv[1]).acquire(); "
        "print('held', flush=True); time.sleep(120)")


# -- one run per output: the lock ---------------------------------------------------------


def hold_lock(out: Path) -> subprocess.Popen:
    """A second real process that takes the lock of ``out`` and keeps it until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


@pytest.mark.slow  # starts Python + torch in a second process
def test_a_run_is_refused_while_another_process_holds_the_output_and_takes_over_after_a_sigkill(tmp_path):
    paths = make_images(tmp_path / "imgs", 2)
    out = tmp_path / "r.csv"
    holder = hold_lock(out)
    try:
        model = MeanScore()
        with pytest.raises(RunRefused, match=rf"^--out {re.escape(str(out))}: another run is writing this output "
                                             rf"\(pid {holder.pid} on host {re.escape(socket.gethostname())}, "
                                             rf"started 20\d\d-.* UTC; lock {re.escape(str(lock_path(out)))}\); "
                                             r"wait for it to end, or choose another --out\.$"):
            run(smoothed_mean(model), paths, out)
        with pytest.raises(RunRefused, match=f"pid {holder.pid}"):  # resuming is no exception
            run(smoothed_mean(model), paths, out, resume=True)
        assert model.calls == 0 and not out.exists()
    finally:
        holder.kill()  # SIGKILL: the lock file stays, with the dead holder's record
        holder.wait()
    assert json.loads(lock_path(out).read_text())["pid"] == holder.pid
    messages = []
    result = run(smoothed_mean(), paths, out, log=messages.append)
    assert result.exit_status == 0 and len(read_csv(out)) == 4
    assert messages[0].startswith(f"note: took over the lock {lock_path(out)} left by a run that has ended "
                                  f"(pid {holder.pid} on host {socket.gethostname()}, started ")
    assert not lock_path(out).exists()  # released (and removed) at the end


def test_the_lock_is_released_when_the_run_is_refused_or_fails(tmp_path):
    paths = make_images(tmp_path / "imgs", 1)
    out = tmp_path / "r.csv"
    out.write_text("a,b\n1,2\n")
    with pytest.raises(RunRefused):
        run(smoothed_mean(), paths, out, resume=True)
    assert not lock_path(out).exists()
    lock = OutputLock(out)  # a flock on a new open file conflicts with any other, in this process too
    assert lock.acquire() is None
    with pytest.raises(LockHeld):
        OutputLock(out).acquire()
    lock.release()


def test_a_filesystem_without_locks_gets_a_note_and_the_run_goes_on(tmp_path, monkeypatch):
    paths = make_images(tmp_path / "imgs", 1)
    out = tmp_path / "r.csv"

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locking.fcntl, "flock", no_locks)
    messages = []
    assert run(smoothed_mean(), paths, out, log=messages.append).exit_status == 0
    assert messages == [f"note: {tmp_path} does not support file locks (No locks available); make sure no other run "
                        "writes this output at the same time."]
    assert len(read_csv(out)) == 2 and not lock_path(out).exists()


# -- an existing output is not replaced silently ----------------------------------------------


def test_an_existing_output_is_refused_without_resume_or_overwrite(tmp_path, capsys):
    paths = make_images(tmp_path / "imgs", 2)
    model = MeanScore()
    for name in ("r.csv", "r.jsonl", "r.json"):
        out = tmp_path / name
        out.write_text("an unrelated file\n")
        with pytest.raises(RunRefused, match=rf"^--out: {out} exists and is not empty; give --resume to continue it, "
                                             r"or --overwrite to replace it \(or choose another --out\)\.$"):
            run(smoothed_mean(model), paths, out)
        assert out.read_text() == "an unrelated file\n" and model.calls == 0
    partial = tmp_path / "k.json.partial.jsonl"  # a killed .json run: its rows are in the partial file
    partial.write_text('{"path": "x"}\n')
    with pytest.raises(RunRefused, match=f"--out: {partial} holds rows of an unfinished run of it; give --resume"):
        run(smoothed_mean(model), paths, tmp_path / "k.json")
    with pytest.raises(RunRefused, match=r"give --resume \(keep the rows already in --out\) or --overwrite"):
        run(smoothed_mean(model), paths, tmp_path / "r.csv", resume=True, overwrite=True)
    assert model.calls == 0
    (tmp_path / "empty.csv").touch()  # an empty file is no result to lose
    assert run(smoothed_mean(), paths, tmp_path / "empty.csv").exit_status == 0
    result = run(smoothed_mean(), paths, tmp_path / "r.csv", overwrite=True)
    assert result.exit_status == 0 and [r["path"] for r in read_csv(tmp_path / "r.csv")][::2] == list(map(str, paths))
    # the command line: one line, nothing certified; --overwrite replaces
    command = ["certify", str(paths[0]), "-n", "8", "--alpha", "0.2", "--quiet", "--device", "cpu",
               "--out", str(tmp_path / "r.jsonl")]
    with pytest.raises(SystemExit, match=r"^certiqa: error: --out: .*r\.jsonl exists and is not empty; give "
                                         r"--resume to continue it, or --overwrite to replace it \(or choose another "
                                         r"--out\)\.$"):
        main(command)
    assert capsys.readouterr().out == ""
    assert main([*command, "--overwrite"]) == 0
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 1


# -- a full disk ------------------------------------------------------------------------------


class FullAfter(io.FileIO):
    """An append-only file whose ``fail_at``-th write puts half its bytes on disk (a torn row)
    and then fails with ENOSPC, as a full disk does."""

    writes = 0
    fail_at = 0

    def write(self, data) -> int:
        FullAfter.writes += 1
        if FullAfter.writes == FullAfter.fail_at:
            super().write(bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


@pytest.fixture
def full_disk(monkeypatch):
    """``fill(k)``: from now on, the runner's stream files fill the disk at their k-th image."""
    real_open = open

    def fake_open(file, mode="r", *args, **kwargs):
        return FullAfter(file, "a") if mode == "ab" else real_open(file, mode, *args, **kwargs)

    def fill(k: int) -> None:
        FullAfter.writes, FullAfter.fail_at = 0, k
        monkeypatch.setattr(runner, "open", fake_open, raising=False)

    return fill


def test_a_full_disk_keeps_the_rows_before_says_so_in_one_line_and_resume_completes(tmp_path, full_disk, monkeypatch):
    paths = make_images(tmp_path / "imgs", 4)
    reference = run(smoothed_mean(), paths, tmp_path / "ref.csv").rows
    out = tmp_path / "r.csv"
    full_disk(3)
    messages = []
    result = run(smoothed_mean(), paths, out, log=messages.append)
    expected = (f"cannot write {out}: No space left on device (ENOSPC); the 2 image(s) (4 row(s)) written before are "
                f"safe in {out}; free space and run the same command again with --resume to certify the rest.")
    assert messages == [f"error: {expected}"]
    assert result.stopped == expected and result.exit_status == 1 and result.errors == []
    assert out.read_bytes().endswith(b"\n")  # the torn half row was cut off
    assert certificates(read_csv(out)) == certificates(read_csv(tmp_path / "ref.csv"))[:4]
    monkeypatch.undo()  # space freed
    model = MeanScore()
    resumed = run(smoothed_mean(model), paths, out, resume=True)
    assert model.calls == 4 and resumed.exit_status == 0  # two images: a clean pass and a batch each
    assert certificates(resumed.rows) == certificates(reference)
    assert certificates(read_csv(out)) == certificates(read_csv(tmp_path / "ref.csv"))


def test_a_full_disk_on_the_command_line_is_one_line_without_a_traceback(tmp_path, full_disk, capsys):
    paths = make_images(tmp_path / "imgs", 3)
    out = tmp_path / "r.jsonl"
    full_disk(2)
    status = main(["certify", *map(str, paths), "-n", "8", "--alpha", "0.2", "--seed", "0", "--quiet",
                   "--device", "cpu", "--out", str(out)])
    captured = capsys.readouterr()
    assert status == 1 and captured.out == ""
    assert captured.err == (f"certiqa: error: cannot write {out}: No space left on device (ENOSPC); the 1 image(s) "
                            f"(1 row(s)) written before are safe in {out}; free space and run the same command again "
                            "with --resume to certify the rest.\n")
    assert len(out.read_text().splitlines()) == 1


def test_a_failed_merge_names_the_files_that_hold_the_rows_and_counts_no_failure(tmp_path, monkeypatch):
    paths = make_images(tmp_path / "imgs", 3)
    out = tmp_path / "r.json"
    real = runner._atomic_write

    def full(path: Path, text: str) -> None:
        if path == out:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, text)

    monkeypatch.setattr(runner, "_atomic_write", full)
    messages = []
    result = run(smoothed_mean(), paths, out, log=messages.append)
    partial = tmp_path / "r.json.partial.jsonl"
    assert messages == [f"error: {out}: could not write the merged results (No space left on device); every row is "
                        f"kept in {partial} (3 image(s) certified by this run); free space and run the same command "
                        "again with --resume to write it (nothing is certified again)."]
    assert result.errors == [] and result.certified == 3 and result.exit_status == 1
    monkeypatch.undo()
    model = MeanScore()
    resumed = run(smoothed_mean(model), paths, out, resume=True)
    assert model.calls == 0 and resumed.exit_status == 0 and resumed.resumed == 3
    assert [r["path"] for r in json.loads(out.read_text())][::2] == list(map(str, paths)) and not partial.exists()


@pytest.fixture
def small_filesystem(tmp_path):
    """A real 16 KiB tmpfs (root only: skipped where mounting is not allowed)."""
    mount = tmp_path / "small"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], capture_output=True)
    except FileNotFoundError:
        pytest.skip("no mount command here")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_real_full_filesystem_then_resume_after_freeing_space(tmp_path, small_filesystem):
    paths = make_images(tmp_path / "imgs", 30)
    reference = run(smoothed_mean(), paths, tmp_path / "ref.jsonl").rows
    out = small_filesystem / "r.jsonl"
    messages = []
    result = run(smoothed_mean(), paths, out, log=messages.append)
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert result.stopped and 0 < len(kept) < len(reference) and out.read_bytes().endswith(b"\n")
    assert messages == [f"error: cannot write {out}: No space left on device (ENOSPC); the {len(kept) // 2} image(s) "
                        f"({len(kept)} row(s)) written before are safe in {out}; free space and run the same command "
                        "again with --resume to certify the rest."]
    assert certificates(kept) == certificates(reference)[: len(kept)]
    subprocess.run(["mount", "-o", "remount,size=1m", str(small_filesystem)], check=True)
    resumed = run(smoothed_mean(), paths, out, resume=True)
    assert resumed.exit_status == 0 and resumed.resumed == len(kept) // 2
    assert certificates([json.loads(line) for line in out.read_text().splitlines()]) == certificates(reference)


# -- what --resume checks ------------------------------------------------------------------


def test_resume_refuses_another_batch_size_or_noise_limit(tmp_path):
    paths = make_images(tmp_path / "imgs", 3)
    out = tmp_path / "r.csv"
    run(smoothed_mean(), paths[:2], out)
    model = MeanScore()
    with pytest.raises(RunRefused, match=r"other settings \(requested_batch: file 32, this run 6\)"):
        run(smoothed_mean(model, batch_size=6), paths, out, resume=True)
    with pytest.raises(RunRefused, match=r"other settings \(max_noise_bytes: file 2147483648, this run 1048576\)"):
        run(smoothed_mean(model), paths, out, resume=True, max_noise_bytes=1 << 20)
    assert model.calls == 0
    # why: the noise depends on the batch (16 samples in fills of 6 draw 3, 3, 3, 3, 2, 2, 0, 0 noisy copies
    # from the 8 streams; one fill of 16 draws 2 from each)
    x = torch.from_numpy(np.asarray(Image.open(paths[2]), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    seed = image_noise_seed(0, runner.file_sha256(paths[2]))
    assert not torch.equal(smoothed_mean(batch_size=6).sample(x, seed=seed), smoothed_mean().sample(x, seed=seed))
    command = ["certify", str(paths[0]), "-n", "8", "--alpha", "0.2", "--quiet", "--device", "cpu",
               "--out", str(tmp_path / "cli.csv")]
    assert main(command) == 0
    with pytest.raises(SystemExit, match=r"^certiqa: error: --resume: .* \(requested_batch: file 32, this run 6\)"):
        main([*command, "--batch-size", "6", "--resume"])


def test_resume_certifies_again_an_image_whose_file_changed(tmp_path):
    paths = make_images(tmp_path / "imgs", 3)
    out = tmp_path / "r.csv"
    run(smoothed_mean(), paths, out)
    before = read_csv(out)
    Image.fromarray(np.full((40, 48, 3), 200, dtype=np.uint8)).save(paths[1])  # new content, same path
    reference = run(smoothed_mean(), paths, tmp_path / "ref.csv").rows
    model, messages = MeanScore(), []
    result = run(smoothed_mean(model), paths, out, resume=True, log=messages.append)
    assert messages[0] == (f"note: {paths[1]} changed since its rows were written (its SHA-256 differs from column "
                           "image_sha256); its rows are dropped and it is certified again.")
    assert model.calls == 2 and (result.resumed, result.certified) == (2, 1)
    after = read_csv(out)
    assert certificates(after) == certificates(read_csv(tmp_path / "ref.csv"))
    assert certificates(result.rows) == certificates(reference)
    assert [r["seconds"] for r in after if r["path"] != str(paths[1])] == [
        r["seconds"] for r in before if r["path"] != str(paths[1])]  # the unchanged images were kept, not redone
    assert after[2]["image_sha256"] == runner.file_sha256(paths[1]) != before[2]["image_sha256"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json"])
def test_resume_names_file_line_and_column_of_a_cell_that_is_not_a_number(tmp_path, suffix):
    paths = make_images(tmp_path / "imgs", 2)
    out = tmp_path / f"r{suffix}"
    run(smoothed_mean(), paths, out)
    text = out.read_text()
    if suffix == ".csv":
        lines = text.splitlines(keepends=True)
        cells = lines[2].split(",")
        cells[1] = "oops"  # the median of the second row
        out.write_text("".join([*lines[:2], ",".join(cells), *lines[3:]]))
        where = "line 3, column median: 'oops' is not a number"
    elif suffix == ".jsonl":
        lines = text.splitlines(keepends=True)
        out.write_text("".join([*lines[:1], json.dumps({**json.loads(lines[1]), "median": "oops"}) + "\n",
                                *lines[2:]]))
        where = "line 2, column median: 'oops' is not a number"
    else:
        rows = json.loads(text)
        rows[1]["n"] = "oops"
        out.write_text(json.dumps(rows))
        where = "row 2, column n: 'oops' is not an integer"
    with pytest.raises(RunRefused, match=rf"^{out}, {where}; correct or remove that (line|row), or give --overwrite "
                                         r"instead of --resume to start over\.$"):
        run(smoothed_mean(), paths, out, resume=True)


def test_out_of_memory_from_a_huge_n_names_n(tmp_path):
    paths = make_images(tmp_path / "imgs", 1)
    result = run(smoothed_mean(n=10**14), paths, None)  # 800 TB of scores: more than any address space
    assert len(result.errors) == 1
    assert result.errors[0].startswith(f"{paths[0]}: out of memory (")
    assert result.errors[0].endswith("): the scores of n = 100000000000000 noise samples take 727.6 TiB "
                                     "(8 bytes each); lower -n.")


# -- warnings: medians outside the score range, flatness ------------------------------------------


def rows_of(medians, cleans):
    return [{"path": f"p{i}", "median": m, "clean": c} for i, (m, c) in enumerate(zip(medians, cleans))]


def test_range_warning_fires_only_beyond_the_slack():
    assert range_warning(rows_of([-5, 50, 105], [0, 50, 100]), (0, 100)) is None  # 5 % of the width: inside
    warning = range_warning(rows_of([-5.01, 50, 250], [0, 50, 100]), (0, 100))
    assert warning.startswith("the smoothed medians of 2 of 3 images lie outside the model's score range [0, 100] "
                              "(farthest: p2, median 250): the noise has carried the model off the images")
    assert range_warning(rows_of([-500], [0]), None) is None  # no range: nothing to compare with


def test_sigma_far_above_the_pixel_range_warns_twice_on_real_images(shared_data, tmp_path, capsys):
    """The audit's case, on real photographs with the default model: sigma 1000, n 20."""
    for name in ("labelled/live_img66.png", "reference/tid2013_I01.png"):
        Image.open(shared_data / "images" / name).crop((0, 0, 64, 64)).save(tmp_path / name.split("/")[1])
    assert main(["certify", str(tmp_path), "--sigma", "1000", "-n", "20", "--alpha", "0.1", "--seed", "0",
                 "--quiet", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "certiqa: warning: sigma 1000 is above the whole pixel range (pixels lie in [0, 1])" in err
    assert "certiqa: warning: the smoothed medians of 2 of 2 images lie outside the model's score range [0, 100]" in err
    assert main(["certify", str(tmp_path), "-n", "20", "--alpha", "0.1", "--seed", "0", "--quiet",
                 "--device", "cpu"]) == 0
    assert "warning" not in capsys.readouterr().err  # at the default sigma: neither


def test_flatness_needs_enough_images_whose_clean_scores_really_differ():
    r = (0, 100)
    # the audit's case: two crops whose clean scores span 0.79 points, medians even closer
    assert flatness_warning(rows_of([61.02, 61.05], [70.11, 70.90]), score_range=r) is None
    assert flatness_warning(rows_of([61.02, 61.05, 61.03], [70.11, 70.90, 70.5]), score_range=r) is None  # tiny span
    assert flatness_warning(rows_of([50, 59], [0, 100]), score_range=r) is None  # two images say too little
    span = FLAT_MIN_SPAN * 100
    assert flatness_warning(rows_of([50, 50, 50], [40, 40 + span - 0.01, 45]), score_range=r) is None
    assert flatness_warning(rows_of([50, 50, 50], [40, 40 + span, 45]), score_range=r) is not None
    assert flatness_warning(rows_of([50, 59, 55], [0, 100, 50]), score_range=None) is None  # no scale, no claim
    assert flatness_warning(rows_of([50, 59, 55], [0, 100, 50]), score_range=(0, 2000)) is None  # 5 % of the range
