"""What `certiqa certify` tells its user: units and --out in --help, the columns (--columns),
the model's scale and direction above the table, and why a row is not certified."""

from __future__ import annotations

import csv
import math

import pytest
from PIL import Image
from scipy.stats import norm

from certiqa import bounds
from certiqa.cli import main
from certiqa.runner import COLUMNS, format_table, model_line

from conftest import REPO


def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def crop(tmp_path):
    path = tmp_path / "chelsea.png"
    Image.open(REPO / "examples" / "images" / "chelsea_clean.png").crop((60, 40, 124, 104)).save(path)
    return path


def test_help_states_units_out_and_columns(capsys):
    with pytest.raises(SystemExit) as done:
        main(["certify", "--help"])
    assert done.value.code == 0
    text = _flat(capsys.readouterr().out)
    assert "--eps EPS [EPS ...] radius (or radii; one sample set serves all): the l2 norm of the whole " \
           "perturbation, pixels in [0, 1]" in text
    assert "--sigma SIGMA standard deviation of the Gaussian noise added to each pixel, pixels in [0, 1]" in text
    assert "an existing file is refused unless --resume (keep its images, certify the rest) or --overwrite " \
           "(replace it)" in text
    assert "--columns print each column" in text and "Columns: certiqa certify --columns" in text
    # the model is chosen one way, and the help says it first
    assert "Choose the model with --model SPEC (without it, the embedded default model" in text
    assert text.index("model: --model SPEC") < text.index("certification: --sigma")
    # --delta alone: the scheme it runs, and that its "futile" has no error bound
    assert "(n0 32, growth 1.25, final spending, power futility 0.05): its 'futile' is an estimate with no " \
           "error bound. --futility proof" in text


def test_columns_lists_every_column_a_run_writes(crop, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        main(["certify", "--columns"])
    assert done.value.code == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == list(COLUMNS)
    assert all(len(line.split(maxsplit=1)) == 2 for line in printed)  # each with its meaning
    for extra in ([], ["--delta", "5", "--n-max", "64", "--alpha", "0.1"]):
        out = tmp_path / "r.csv"
        assert main(["certify", str(crop), "--n", "20", "--quiet", "--out", str(out), "--device", "cpu",
                     *extra]) == 0
        header = next(csv.reader(out.open()))
        assert set(header) <= set(COLUMNS), set(header) - set(COLUMNS)
        out.unlink()


def _largest_certifiable_eps(n: int, sigma: float, alpha: float) -> float:
    """By bisection on bound_ranks: the radius where n samples stop certifying."""
    lo, hi = 0.0, 10 * sigma
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if None not in bounds.bound_ranks(n, sigma, mid, alpha) else (lo, mid)
    return lo


def test_reason_n_too_small_and_header_for_cnniqa_live(shared_data, crop, tmp_path, capsys):
    """n = 2 certifies nothing at alpha 0.001: (1/2)^n <= alpha / 2 needs n >= log2(2000), 11."""
    out = tmp_path / "r.csv"
    weights = shared_data / "models" / "cnniqa-live.pt"
    assert main(["certify", str(crop), "--model", f"cnniqa:{weights}", "--n", "2", "--eps", "0.05", "--quiet",
                 "--out", str(out), "--device", "cpu"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == f"model: cnniqa:{weights} (scores 0-100, lower is better)"
    needed = math.ceil(math.log2(2 / 0.001))
    assert needed == 11
    reason = f"n too small for alpha (n >= {needed} needed at alpha 0.001)"
    assert table[1].split() == ["path", "eps", "median", "lower", "upper", "width", "certified", "clean", "reason"]
    assert table[3].endswith(reason) and " no " in table[3]
    (row,) = list(csv.DictReader(out.open()))
    assert row["certified"] == "False" and row["reason"] == reason and row["lower_better"] == "True"


def test_reason_eps_too_large_and_header_for_the_default_model(crop, tmp_path, capsys):
    out = tmp_path / "r.csv"
    assert main(["certify", str(crop), "--n", "20", "--eps", "0.05", "5", "--quiet", "--out", str(out),
                 "--device", "cpu"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "model: default (scores 0-100, higher is better)"
    small, large = list(csv.DictReader(out.open()))
    assert small["certified"] == "True" and small["reason"] == ""
    largest = _largest_certifiable_eps(20, 0.12, 0.001)
    assert largest == pytest.approx(0.12 * norm.ppf(0.0005 ** (1 / 20)), rel=1e-9)  # the closed form
    shown = float(large["reason"].split("at most ")[1].split()[0])
    assert large["certified"] == "False" and large["reason"] == (
        f"eps too large for sigma and n (at most {shown:g} at sigma 0.12, n 20)")
    assert largest * (1 - 1e-3) <= shown <= largest  # rounded down, so the radius shown certifies
    assert table[3].split()[6:] == ["yes", f"{float(small['clean']):.4f}"]  # certified: no reason
    assert table[4].endswith(large["reason"])


def test_reason_of_rows_written_before_the_column_is_filled_on_resume(crop, tmp_path, capsys):
    """A file written before the reason column existed resumes; its rows get their reason."""
    out = tmp_path / "r.csv"
    second = tmp_path / "second.png"
    Image.open(crop).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(second)
    args = ["--n", "5", "--seed", "0", "--quiet", "--out", str(out), "--device", "cpu"]
    assert main(["certify", str(crop), *args]) == 0
    rows = list(csv.DictReader(out.open()))
    old_columns = [c for c in rows[0] if c != "reason"]
    with out.open("w", newline="") as fh:  # the file as an older certiqa wrote it
        writer = csv.DictWriter(fh, old_columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    capsys.readouterr()
    assert main(["certify", str(crop), str(second), *args, "--resume"]) == 0
    assert "1 image(s) kept" in capsys.readouterr().err
    resumed = list(csv.DictReader(out.open()))
    reason = "n too small for alpha (n >= 11 needed at alpha 0.001)"
    assert [r["reason"] for r in resumed] == [reason, reason]
    assert resumed[0]["image_sha256"] == rows[0]["image_sha256"] and resumed[0]["median"] == rows[0]["median"]


def test_table_without_provenance_has_no_model_line():
    row = {"path": "a.png", "eps": 0.05, "median": 1.0, "lower": 0.5, "upper": 1.5, "width": 1.0,
           "certified": True, "clean": None, "reason": None}
    assert format_table([row]).splitlines()[0].split()[0] == "path"
    assert model_line({"model": "m.pt", "lower_better": None, "score_range": None}) == (
        "model: m.pt (score range unknown, direction unknown)")
    assert model_line({"model": "x", "denoiser": "pretrained", "lower_better": "False",
                       "score_range": "[0.0, 1.0]"}) == "model: x + denoiser pretrained (scores 0-1, higher is better)"
