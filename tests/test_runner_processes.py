"""``certiqa certify`` runs that are really killed (SIGKILL at random points, SIGINT)
and resumed, a second run refused while a first holds the output (and taking over once
the first is SIGKILLed), and a run sharded over two gloo processes by torchrun: the final
rows equal those of one uninterrupted process, none lost, none doubled."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

pytestmark = pytest.mark.slow  # each starts Python + torch a few times

IMAGES = 12
SETTINGS = ["-n", "200", "--alpha", "0.1", "--seed", "0", "--eps", "0.02", "0.05", "--device", "cpu", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """12 random 64x64 images (one CNNIQA patch each: a few tens of ms per image at n = 200)."""
    folder = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(1)
    for i in range(IMAGES):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(folder / f"im{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory) -> Path:
    """One uninterrupted run, as .csv and .jsonl, in a process like the others (one thread:
    the model's float sums, hence the last bits of the scores, depend on the thread count)."""
    out = tmp_path_factory.mktemp("reference")
    for suffix in (".csv", ".jsonl"):
        command = [sys.executable, "-m", "certiqa", "certify", str(folder), *SETTINGS, "--out", str(out / f"r{suffix}")]
        done = subprocess.run(command, env=ENV, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def certificates(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def complete_rows(path: Path) -> int:
    """Rows on disk whose line is complete (the header excluded)."""
    if not path.exists():
        return 0
    return max(path.read_bytes().count(b"\n") - 1, 0)


def certify_command(folder: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "certiqa", "certify", str(folder), *SETTINGS, "--out", str(out), "--resume"]


def wait_for_rows(proc: subprocess.Popen, out: Path, rows: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while complete_rows(out) < rows and proc.poll() is None:
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.002)


def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_rows(folder, reference, tmp_path):
    out = tmp_path / "r.csv"
    rng = random.Random(11)
    kept_seconds: dict[str, str] = {}
    for _ in range(3):
        proc = subprocess.Popen(certify_command(folder, out), env=ENV, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_rows(proc, out, complete_rows(out) + 2 * rng.randint(1, 3))
        time.sleep(rng.uniform(0.0, 0.03))  # anywhere in the next image, or in the middle of writing it
        proc.kill()
        proc.wait()
        # the rows of images finished so far keep their timings to the end: never redone
        kept_seconds.update({r["path"]: r["seconds"] for r in read_csv(out)[: complete_rows(out) // 2 * 2]})
    assert complete_rows(out) < 2 * IMAGES, "every kill came after the run had finished"
    done = subprocess.run(certify_command(folder, out), env=ENV, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = read_csv(out)
    assert certificates(rows) == certificates(read_csv(reference / "r.csv"))
    assert all(r["seconds"] == kept_seconds[r["path"]] for r in rows if r["path"] in kept_seconds)
    assert len({r["path"] for r in rows}) == IMAGES and len(rows) == 2 * IMAGES


def test_sigint_exits_130_keeps_finished_rows_and_says_how_to_resume(folder, reference, tmp_path):
    out = tmp_path / "r.csv"
    proc = subprocess.Popen(certify_command(folder, out), env=ENV, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_rows(proc, out, 4)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "certiqa: interrupted by SIGINT: " in stderr
    assert f"they are kept in {out}; run the same command again with --resume to certify the rest." in stderr
    rows = read_csv(out)
    assert 4 <= len(rows) < 2 * IMAGES and len(rows) % 2 == 0 and out.read_bytes().endswith(b"\n")
    assert certificates(rows) == certificates(read_csv(reference / "r.csv"))[: len(rows)]


def test_a_second_run_is_refused_while_the_first_holds_the_output_and_takes_over_after_a_sigkill(
        folder, reference, tmp_path):
    out = tmp_path / "r.csv"
    first = subprocess.Popen(certify_command(folder, out), env=ENV, cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_rows(first, out, 2)
        first.send_signal(signal.SIGSTOP)  # holds the lock, mid-run, for as long as the test needs
        assert first.poll() is None, "the first run finished before it could be paused"
        before = out.read_bytes()
        second = subprocess.run(certify_command(folder, out), env=ENV, cwd=REPO, capture_output=True, text=True,
                                timeout=300)
        assert second.returncode == 1
        assert second.stderr.startswith(f"certiqa: error: --out {out}: another run is writing this output "
                                        f"(pid {first.pid} on host {socket.gethostname()}, started ")
        assert second.stderr.endswith(f"; lock {out}.lock); wait for it to end, or choose another --out.\n")
        assert second.stderr.count("\n") == 1 and second.stdout == "" and out.read_bytes() == before
    finally:
        first.kill()  # SIGKILL: the lock file stays behind with the first run's pid
        first.wait()
    done = subprocess.run(certify_command(folder, out), env=ENV, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"certiqa: note: took over the lock {out}.lock left by a run that has ended (pid {first.pid} " in done.stderr
    assert certificates(read_csv(out)) == certificates(read_csv(reference / "r.csv"))
    assert not Path(f"{out}.lock").exists()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_two_processes_resume_and_merge_in_input_order(folder, reference, tmp_path):
    """An earlier run left 2 images in OUT and 1 in a part file (plus a torn line); two gloo
    processes certify the other 9 and rank 0 merges everything into OUT in input order."""
    lines = (reference / "r.jsonl").read_text().splitlines(keepends=True)
    out = tmp_path / "r.jsonl"
    out.write_text("".join(lines[:4]))
    parts = tmp_path / "r.jsonl.parts"
    parts.mkdir()
    kept = [json.loads(line) | {"seconds": 12345.0} for line in lines[10:12]]  # image 5, from an earlier rank 1
    (parts / "rank-1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept) + lines[12][:40])
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(free_port()), "-m", "certiqa", "certify", str(folder), *SETTINGS,
               "--out", str(out), "--resume"]
    done = subprocess.run(command, env=ENV, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resuming" in done.stderr and "3 image(s) already certified there, 9 to go." in done.stderr
    assert "processes=2" in done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert certificates(rows) == certificates([json.loads(line) for line in lines])
    assert [r["seconds"] for r in rows[10:12]] == [12345.0, 12345.0]  # kept from the part file, not redone
    assert not parts.exists() and not (tmp_path / "r.jsonl.lock").exists()
