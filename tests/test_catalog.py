"""``certiqa models``: the built-in models, the shipped denoisers and pyiqa's NR metrics,
read without building anything (pyiqa here is a stand-in package with its config table)."""

from __future__ import annotations

import sys
import textwrap

import pytest

from certiqa.catalog import builtin_models, format_catalog, pyiqa_metrics, shipped_denoisers
from certiqa.cli import main
from certiqa.denoisers import PRETRAINED_SIGMAS, pretrained_path
from certiqa.models import load_model

CONFIGS = '''
DEFAULT_CONFIGS = {
    "topiq_nr": {"metric_opts": {"type": "CFANet"}, "metric_mode": "NR", "score_range": "~0, ~1"},
    "brisque": {"metric_opts": {"type": "BRISQUE"}, "metric_mode": "NR", "lower_better": True,
                "score_range": "~0, ~150"},
    "nrqm": {"metric_opts": {"type": "NRQM"}, "metric_mode": "NR", "score_range": "0, ~"},
    "lpips": {"metric_opts": {"type": "LPIPS"}, "metric_mode": "FR", "lower_better": True, "score_range": "0, 1"},
}
'''


@pytest.fixture
def fake_pyiqa(tmp_path, monkeypatch):
    package = tmp_path / "pyiqa"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "default_model_configs.py").write_text(textwrap.dedent(CONFIGS))
    for name in [m for m in sys.modules if m == "pyiqa" or m.startswith("pyiqa.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))


def test_builtin_models_state_what_loading_them_gives():
    default, cnniqa = builtin_models()
    model = load_model("default")
    assert default["spec"] == "default"
    assert (default["lower_better"], default["score_range"]) == (model.lower_better, model.score_range)
    assert cnniqa["spec"] == "cnniqa:FILE" and (cnniqa["lower_better"], cnniqa["score_range"]) == (True, (0.0, 100.0))


def test_shipped_denoisers_name_their_sigma_and_model():
    rows = shipped_denoisers()
    assert [row["sigma"] for row in rows] == list(PRETRAINED_SIGMAS)
    assert all(row["base_model"] == "default" and row["file"] == pretrained_path(row["sigma"]).name for row in rows)


def test_pyiqa_nr_metrics_from_the_config_table(fake_pyiqa, capsys):
    assert pyiqa_metrics() == [
        {"spec": "pyiqa:brisque", "lower_better": True, "score_range": (0.0, 150.0), "score_range_text": "~0, ~150"},
        {"spec": "pyiqa:nrqm", "lower_better": False, "score_range": None, "score_range_text": "0, ~"},
        {"spec": "pyiqa:topiq_nr", "lower_better": False, "score_range": (0.0, 1.0), "score_range_text": "~0, ~1"},
    ]  # the full-reference lpips is left out
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "pyiqa's no-reference metrics (3;" in out and "pyiqa:lpips" not in out
    assert any(line.split() == ["pyiqa:brisque", "lower", "is", "better", "~0,", "~150"] for line in out.splitlines())
    assert any(line.split()[:3] == ["default", "higher", "is"] for line in out.splitlines())
    assert any(line.split()[:3] == ["0.12", "--model", "default"] for line in out.splitlines())


def test_without_pyiqa_the_listing_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyiqa", None)  # as if pyiqa were not installed
    assert pyiqa_metrics() is None
    assert "pyiqa is not installed (pip install pyiqa)" in format_catalog()
