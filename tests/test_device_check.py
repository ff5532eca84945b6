"""benchmarks/device_check.py, dry-run on the CPU at tiny settings: every part runs, writes
its figures (finite) and status to the JSON and the markdown, and stops when its share of
the budget is spent."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

from conftest import REPO

spec = importlib.util.spec_from_file_location("device_check", REPO / "benchmarks" / "device_check.py")
device_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(device_check)

TINY = ["--device", "cpu", "--n", "8", "--images", "1", "--crop", "40", "--batch-sizes", "4", "--precisions", "fp32",
        "bf16"]


def _numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def test_budget_gives_each_part_its_share_plus_what_earlier_parts_left():
    now = [0.0]
    budget = device_check.Budget(100.0, clock=lambda: now[0])
    assert budget.begin("tests") == pytest.approx(15.0)
    now[0] = 5.0
    assert budget.end() == pytest.approx(5.0)
    assert budget.begin("throughput") == pytest.approx(45.0 + 10.0)  # 10 s left over from the tests
    now[0] = 95.0  # overran its allowance: nothing banked, and at most the total is left
    budget.end()
    assert budget.begin("seed_loop") == pytest.approx(5.0)
    now[0] = 120.0
    assert budget.begin("distributed") == 0.0 and budget.left() == 0.0


def test_dry_run_measures_both_models_at_every_precision(shared_data, tmp_path):
    out = tmp_path / "out"
    status = device_check.main([*TINY, "--data", str(shared_data), "--out", str(out), "--budget", "300",
                                "--parts", "throughput", "seed_loop"])
    assert status == 0
    report = json.loads((out / "device_check.json").read_text())
    parts = report["parts"]
    assert list(parts) == ["install", "throughput", "seed_loop"]
    assert parts["install"]["status"].startswith("skipped (no --wheels")
    assert parts["throughput"]["status"] == parts["seed_loop"]["status"] == "ok"
    rows = parts["throughput"]["rows"]
    assert [(r["model"], r["precision"], r["batch"]) for r in rows] == [
        (m, p, 4) for m in ("CNNIQA-LIVE", "default + denoiser") for p in ("fp32", "bf16")]
    for row in rows:
        assert row["noisy_per_s"] == pytest.approx(8 / row["certify_s"])
        assert row["certify_over_forward"] == pytest.approx(row["certify_s"] / row["forward_s"])
        assert row["size"] == "40x40" and row["peak_mib"] is None  # no GPU memory on the CPU
    assert [r["max_median_shift_vs_fp32"] for r in rows[::2]] == [0.0, 0.0]  # fp32 against itself
    loops = parts["seed_loop"]["rows"]
    assert [r["model"] for r in loops] == ["CNNIQA-LIVE", "default + denoiser"] and all(r["complete"] for r in loops)
    assert all(r["speedup"] == pytest.approx(r["certify_noisy_per_s"] / r["noisy_per_s"]) for r in loops)
    assert all(math.isfinite(v) for v in _numbers(report))
    assert report["total_s"] <= 300 and all(p["seconds"] <= p["allowance_s"] for p in list(parts.values())[1:])
    text = (out / "device_check.md").read_text()
    assert "| CNNIQA-LIVE | bf16 | 4 | 40x40 | 8 | 1 |" in text and "## against the research scripts' loop" in text


def test_spent_budget_stops_parts_and_still_writes(shared_data, tmp_path, monkeypatch):
    """A part stops at its next check once its time is spent, keeping what it measured; a
    measurement that fails (here the bf16 forward passes) is a row with its error."""
    checks = iter([1.0, 1.0, 1.0, 0.0])  # tests (under 5 s: not started), then two measurements, then spent
    monkeypatch.setattr(device_check.Budget, "left", lambda self: next(checks, 0.0))
    bare_forward = device_check._bare_forward

    def failing(smoothed, image, device):
        if smoothed.precision == "bf16":
            raise ValueError("the model returned a non-finite score (inf)\nmore")
        bare_forward(smoothed, image, device)

    monkeypatch.setattr(device_check, "_bare_forward", failing)
    out = tmp_path / "out"
    assert device_check.main([*TINY, "--data", str(shared_data), "--out", str(out)]) == 0
    report = json.loads((out / "device_check.json").read_text())
    parts = report["parts"]
    assert parts["tests"]["status"] == "skipped (budget spent)"  # left() < 5 s: pytest is not started
    assert parts["throughput"]["status"] == "stopped (budget spent)"
    fp32, bf16 = parts["throughput"]["rows"]
    assert (fp32["model"], fp32["precision"], bf16["model"], bf16["precision"]) == ("CNNIQA-LIVE", "fp32",
                                                                                    "CNNIQA-LIVE", "bf16")
    assert fp32["noisy_per_s"] > 0 and "error" not in fp32
    assert bf16["error"] == "ValueError: the model returned a non-finite score (inf)" and "noisy_per_s" not in bf16
    assert parts["seed_loop"]["status"] == "stopped (budget spent)" and parts["seed_loop"]["rows"] == []
    assert parts["distributed"]["status"] == "stopped (budget spent)"
    text = (out / "device_check.md").read_text()
    assert "| throughput | stopped (budget spent) |" in text and "ValueError: the model returned" in text


@pytest.mark.slow
def test_wrapper_runs_every_part_in_real_processes(shared_data, tmp_path):
    """The shell wrapper, pytest -m cuda and torchrun (one gloo process) against one process."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([str(REPO / "benchmarks" / "device_check.sh"), *TINY, "--data", str(shared_data),
                           "--tests", "tests/test_noise.py", "--batch-sizes", "8", "--precisions", "fp32",
                           "--budget", "400"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    parts = json.loads((out / "device_check.json").read_text())["parts"]
    assert all(p["status"] == "ok" for name, p in parts.items() if name != "install"), parts
    assert parts["tests"]["counts"] == {"skipped": 1, "deselected": 20}  # the one CUDA test of test_noise.py
    dist = parts["distributed"]
    assert dist["backend"] == "gloo" and dist["rows"] == 1 and dist["rows_agree"] is True
    assert {run["rc"] for run in dist["runs"].values()} == {0}
    assert "all_reduce 1.0 ranks 1" in dist["runs"]["probe"]["tail"]
    assert done.stdout.startswith("# device check: CPU")
    assert sorted(p.name for p in out.iterdir()) == ["device_check.json", "device_check.md",
                                                      "device_check_distributed.log", "device_check_tests.log"]
