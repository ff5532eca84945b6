"""The README's Python example runs as written (small n)."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO


def test_quickstart_runs():
    done = subprocess.run([sys.executable, "examples/quickstart.py", "--n", "40"], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "plain smoothing" in done.stdout and "+ pretrained DnCNN" in done.stdout
    assert done.stdout.count("certified [") == 2 and "inf" not in done.stdout  # n = 40 certifies eps 0.05
