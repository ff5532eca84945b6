"""Certified benchmark statements (certiqa.statements, certiqa compare-methods, certify --family-alpha).

Exactness claims are checked against brute force: every score vector on a grid of each
interval (endpoints included) is enumerated and the statistic computed directly."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from certiqa import SmoothedIQA
from certiqa.cli import main
from certiqa.distributed import Group
from certiqa.runner import certify_paths, read_results
from certiqa.smoothing import certify_samples
from certiqa.statements import (
    Assignment,
    LevelNotMet,
    certified_above,
    check_family_level,
    compare,
    covering_pairs,
    family_level,
    kendall_bounds,
    quality_intervals,
    rank_intervals,
    score_rank_intervals,
    source_outcomes,
    spearman_bounds,
)

from test_coverage import assert_coverage


def grid(lo: np.ndarray, up: np.ndarray, step: float) -> np.ndarray:
    """Every vector (K, N) with entry i on lo_i, lo_i + step, ..., up_i (endpoints included)."""
    axes = [np.unique(np.r_[np.arange(a, b, step), b]) for a, b in zip(lo, up)]
    return np.array(list(itertools.product(*axes)))


def tau_a(s: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Kendall's tau-a of each row of s (K, N) against h (N,), ties counting 0."""
    i, j = np.triu_indices(s.shape[1], 1)
    return (np.sign(s[:, j] - s[:, i]) * np.sign(h[j] - h[i])).sum(axis=1) / len(i)


def random_intervals(rng: np.random.Generator, n: int, distinct: bool) -> tuple[np.ndarray, np.ndarray]:
    """n intervals on a lattice of step 1: distinct endpoints (a permutation of 0..2n-1) or any (with ties,
    touching and degenerate intervals)."""
    ends = rng.permutation(2 * n).reshape(n, 2) if distinct else rng.integers(0, 4, size=(n, 2))
    return ends.min(axis=1).astype(float), ends.max(axis=1).astype(float)


# -- hand-built cases ----------------------------------------------------------------------------


def test_certified_pairs_and_rank_intervals_on_a_hand_built_set():
    # A [8, 9] > B [5, 7]; C [6, 7.5] overlaps B; D [1, 2] is below all; E [6.5, 9.5] overlaps A, B and C
    lo = np.array([8.0, 5.0, 6.0, 1.0, 6.5])
    up = np.array([9.0, 7.0, 7.5, 2.0, 9.5])
    above = certified_above(lo, up)
    assert {(int(a), int(b)) for a, b in zip(*np.nonzero(above))} == {(0, 1), (0, 2), (0, 3), (1, 3), (2, 3),
                                                                      (4, 3)}
    best, worst = rank_intervals(lo, up)
    assert best.tolist() == [1, 2, 2, 5, 1] and worst.tolist() == [2, 4, 4, 5, 4]
    assert sorted(covering_pairs(above)) == [(0, 1), (0, 2), (1, 3), (2, 3), (4, 3)]


def test_rank_intervals_are_exact_over_the_box():
    rng = np.random.default_rng(1)
    for _ in range(30):
        lo, up = random_intervals(rng, 4, distinct=False)
        s = grid(lo, up, 0.5)
        best, worst = rank_intervals(lo, up)
        strictly_above = (s[:, None, :] > s[:, :, None]).sum(axis=2)  # (K, a): #b with s_b > s_a
        at_or_above = (s[:, None, :] >= s[:, :, None]).sum(axis=2) - 1
        assert (1 + strictly_above.min(axis=0)).tolist() == best.tolist()
        assert (1 + at_or_above.max(axis=0)).tolist() == worst.tolist()
        low, high = score_rank_intervals(lo, up)  # ascending image ranks: 1 + #below .. N - #above
        below = (s[:, None, :] < s[:, :, None]).sum(axis=2)
        assert (1 + below.min(axis=0)).tolist() == low.tolist()
        assert (4 - strictly_above.min(axis=0)).tolist() == high.tolist()


def test_lower_is_better_turns_the_intervals_around():
    lo, up = quality_intervals(np.array([1.0, 5.0]), np.array([2.0, 6.0]), lower_better=True)
    assert lo.tolist() == [-2.0, -6.0] and up.tolist() == [-1.0, -5.0]
    assert certified_above(lo, up)[0, 1] and not certified_above(lo, up)[1, 0]  # score 1-2 beats 5-6
    with pytest.raises(ValueError, match="lower <= upper"):
        quality_intervals(np.array([2.0]), np.array([1.0]), lower_better=False)


def test_source_outcomes():
    # per source: win (A [5, 6] vs B [1, 2]), loss ([0, 1] vs [3, 4]), undecided ([2, 4] vs [3, 5])
    assert source_outcomes(np.array([5.0, 0, 2]), np.array([6.0, 1, 4]),
                           np.array([1.0, 3, 3]), np.array([2.0, 4, 5])) == (1, 1, 1)


def test_kendall_bounds_on_a_hand_built_set():
    # human order 0 < 1 < 2 < 3; scores: 0 [0, 1], 1 [2, 3], 2 [2.5, 4] (overlaps 1), 3 [-1, 0.5] (overlaps 0)
    lo, up, h = np.array([0.0, 2, 2.5, -1]), np.array([1.0, 3, 4, 0.5]), np.array([1.0, 2, 3, 4])
    k = kendall_bounds(lo, up, h)
    # certainly concordant: (0,1), (0,2); discordant: (1,3), (2,3); undecided: (1,2), (0,3)
    assert (k.concordant, k.discordant, k.undecided, k.pairs) == (2, 2, 2, 6)
    assert (k.lower, k.upper) == (-2 / 6, 2 / 6)


@pytest.mark.parametrize("seed", range(60))
def test_kendall_bounds_are_valid_and_exact_where_claimed(seed):
    rng = np.random.default_rng(seed)
    distinct = seed % 2 == 0
    lo, up = random_intervals(rng, 4, distinct)
    h = rng.permutation(4).astype(float) if seed % 4 else np.array([1.0, 1, 2, 3])  # some with human ties
    k = kendall_bounds(lo, up, h)
    taus = tau_a(grid(lo, up, 0.25), h)
    assert k.lower <= taus.min() + 1e-12 and taus.max() <= k.upper + 1e-12
    if distinct and k.discordant == 0:  # the claimed exactness
        assert math.isclose(taus.max(), k.upper)
    if distinct and k.concordant == 0:
        assert math.isclose(taus.min(), k.lower)


def test_kendall_bounds_exact_cases_are_met():
    """The exact cases above occur among the random ones (the test checks something)."""
    hits = [0, 0]
    for seed in range(0, 60, 2):
        rng = np.random.default_rng(seed)
        lo, up = random_intervals(rng, 4, True)
        k = kendall_bounds(lo, up, rng.permutation(4).astype(float) if seed % 4 else np.array([1.0, 1, 2, 3]))
        hits[0] += k.discordant == 0 and k.undecided > 0
        hits[1] += k.concordant == 0 and k.undecided > 0
    assert min(hits) >= 3


def test_kendall_bound_is_conservative_against_a_certain_pair():
    # h: 0 < 1 < 2; 0 is certainly above 2, 1 overlaps both: 0-1 and 1-2 cannot both be concordant
    lo, up, h = np.array([5.0, 2, 3]), np.array([6.0, 7, 4]), np.array([1.0, 2, 3])
    k = kendall_bounds(lo, up, h)
    taus = tau_a(grid(lo, up, 0.25), h)
    assert (k.discordant, k.undecided) == (1, 2) and k.upper == pytest.approx(1 / 3)
    assert taus.max() == pytest.approx(-1 / 3) and k.lower == taus.min() == -1.0


def test_kendall_bound_is_conservative_when_intervals_only_touch():
    lo, up, h = np.array([1.0, 0.0]), np.array([2.0, 1.0]), np.array([1.0, 2.0])  # [1, 2] and [0, 1] meet at 1
    k = kendall_bounds(lo, up, h)
    taus = tau_a(grid(lo, up, 0.25), h)
    assert (k.lower, k.upper) == (-1.0, 1.0) and (taus.min(), taus.max()) == (-1.0, 0.0)


def spearman_range(lo: np.ndarray, up: np.ndarray, h: np.ndarray, step: float) -> tuple[float, float]:
    """Min and max of Spearman's rho over the untied vectors of the grid (Pearson correlation of ranks)."""
    s = grid(lo, up, step)
    s = s[(np.diff(np.sort(s, axis=1), axis=1) > 0).all(axis=1)]
    ranks = np.argsort(np.argsort(s, axis=1), axis=1) + 1.0
    g = stats.rankdata(h)
    rho = [np.corrcoef(r, g)[0, 1] for r in np.unique(ranks, axis=0)]
    return min(rho), max(rho)


def realisable_orders(lo: np.ndarray, up: np.ndarray) -> list[np.ndarray]:
    """The rank vectors of the box, by enumeration: a permutation (images sorted from lowest) is realised
    when placing each image at max(its lower end, the previous point + 1e-6) stays within its interval."""
    out = []
    for order in itertools.permutations(range(len(lo))):
        point, ok = -np.inf, True
        for i in order:
            point = max(lo[i], point + 1e-6)
            ok &= point <= up[i]
        if ok:
            ranks = np.empty(len(lo))
            ranks[list(order)] = np.arange(1, len(lo) + 1)
            out.append(ranks)
    return out


@pytest.mark.parametrize("seed", range(15))
def test_spearman_bounds_are_valid(seed):
    rng = np.random.default_rng(100 + seed)
    lo, up = random_intervals(rng, 4, distinct=True)
    h = rng.permutation(4).astype(float) if seed % 3 else np.array([2.0, 1, 1, 3])
    lower, upper = spearman_bounds(lo, up, h)
    low, high = spearman_range(lo, up, h, 0.5)
    assert lower <= low + 1e-12 and high <= upper + 1e-12
    rho = [np.corrcoef(r, stats.rankdata(h))[0, 1] for r in realisable_orders(lo, up)]
    assert lower <= min(rho) + 1e-12 and max(rho) <= upper + 1e-12


def test_spearman_bounds_exact_cases(monkeypatch):
    h = np.array([1.0, 2, 3, 4])
    # disjoint intervals: one rank vector, the bound is the value
    lo, up = np.array([3.0, 0, 6, 9]), np.array([4.0, 1, 7, 10])
    assert spearman_bounds(lo, up, h) == pytest.approx((0.8, 0.8))
    assert spearman_bounds(lo, up, h)[0] == pytest.approx(stats.spearmanr([3.5, 0.5, 6.5, 9.5], h).statistic)
    # two groups of overlapping images: every combination of swaps is reachable, and the bounds are attained
    lo, up = np.array([0.0, 1, 5, 6]), np.array([2.0, 3, 7, 8])
    assert spearman_bounds(lo, up, h) == pytest.approx((0.6, 1.0))
    assert spearman_range(lo, up, h, 0.25) == pytest.approx((0.6, 1.0))
    # everything overlaps: every permutation, rho in [-1, 1]
    lo, up = np.zeros(4), np.full(4, 10.0)
    assert spearman_bounds(lo, up, h) == pytest.approx((-1.0, 1.0))
    with pytest.raises(ValueError, match="all equal"):
        spearman_bounds(lo, up, np.ones(4))
    # above the assignment limit: the looser knapsack bound, still valid
    lo, up = np.array([0.0, 1, 5, 6]), np.array([2.0, 3, 7, 8])
    monkeypatch.setattr("certiqa.statements.ASSIGNMENT_LIMIT", 1)
    lower, upper = spearman_bounds(lo, up, h)
    assert lower == pytest.approx(0.4) and upper == pytest.approx(1.0)


def test_spearman_bound_is_conservative_when_the_certified_order_forbids_a_permutation():
    # 5 images: 3 [2, 4] is certainly below 4 [5, 9]; the assignment still lets their ranks cross
    lo, up = np.array([0.0, 1, 3, 2, 5]), np.array([8.0, 7, 6, 4, 9])
    h = np.array([4.0, 3, 1, 2, 0])
    rho = [np.corrcoef(r, stats.rankdata(h))[0, 1] for r in realisable_orders(lo, up)]
    lower, upper = spearman_bounds(lo, up, h)
    assert lower == pytest.approx(min(rho)) == pytest.approx(-1.0)
    assert max(rho) == pytest.approx(0.7) and upper == pytest.approx(0.9)


# -- family level --------------------------------------------------------------------------------


def test_family_level_bookkeeping():
    alphas = [0.01 / 7] * 7
    assert family_level(alphas) == pytest.approx(0.01)
    assert check_family_level(alphas) == pytest.approx(0.01)  # nothing asked: the level met
    assert check_family_level(alphas, 0.01) == 0.01  # N copies of A / N meet A despite rounding
    with pytest.raises(LevelNotMet, match=r"add up to 0.06, more than the family level 0.01 asked for; state the "
                                          r"level they meet \(--family-alpha 0.06\)"):
        check_family_level([0.01] * 6, 0.01)
    assert check_family_level([0.01] * 6, 0.06) == 0.06  # told the level they do meet
    with pytest.raises(LevelNotMet, match=r"--family-alpha 0.0124\)"):
        check_family_level([0.0041, 0.0041, 0.00411], 0.01)
    assert check_family_level([0.0041, 0.0041, 0.00411], 0.0124) == 0.0124
    with pytest.raises(ValueError, match=r"alphas must be a non-empty list of numbers in \(0, 1\)"):
        family_level([0.5, 1.0])
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        check_family_level([0.1], 1.5)


def test_family_statement_holds_at_least_1_minus_alpha_of_the_time():
    """Closed form: samples of f(x + G) for f(z) = w.z + b are N(mu, (sigma |w|)^2) and the smoothed
    median over the eps-ball ranges over exactly [mu - eps |w|, mu + eps |w|]. 3 methods x 4 images
    certified at A / 12; a run fails when any method mean interval misses the true range of the
    method's mean or a certified order or rank interval is false. Stated test: one-sided exact binomial
    test of H0 "failure rate <= A" at level 0.001 (test_coverage.assert_coverage); with alpha A per image
    instead of A / 12 the same test rejects."""
    runs, n, sigma, eps, family_alpha, w_norm = 1500, 200, 0.25, 0.1, 0.1, 1.0
    mu = np.array([0.0, 0.1, 0.2, 0.3, 0.15, 0.25, 0.35, 0.45, 0.6, 0.7, 0.8, 0.9])
    methods = np.repeat(np.arange(3), 4)
    true_lo, true_hi = mu - eps * w_norm, mu + eps * w_norm
    mean_lo = np.array([true_lo[methods == m].mean() for m in range(3)])
    mean_hi = np.array([true_hi[methods == m].mean() for m in range(3)])
    rng = np.random.default_rng(0)
    draws = torch.from_numpy(np.sort(mu[None, :, None] + sigma * w_norm * rng.standard_normal((runs, 12, n)), axis=2))

    def failures(alpha: float) -> tuple[int, int]:
        """Runs where a statement is false, and runs where some image's interval misses its true range."""
        res = certify_samples(draws.reshape(runs * 12, n), eps, sigma, alpha)
        lower, upper = res.lower.numpy().reshape(runs, 12), res.upper.numpy().reshape(runs, 12)
        false_statements = 0
        for lo, up in zip(lower, upper):
            m_lo = np.array([lo[methods == m].mean() for m in range(3)])
            m_up = np.array([up[methods == m].mean() for m in range(3)])
            wrong_mean = np.any((m_lo > mean_lo) | (m_up < mean_hi))
            wrong_order = np.any(certified_above(m_lo, m_up) & ~certified_above(mean_lo, mean_hi))
            best, worst = rank_intervals(m_lo, m_up)
            true_best, true_worst = rank_intervals(mean_lo, mean_hi)
            false_statements += bool(wrong_mean or wrong_order or np.any((best > true_best) | (worst < true_worst)))
        misses = int(np.sum(np.any((lower > true_lo) | (upper < true_hi), axis=1)))
        return false_statements, misses

    false_statements, misses = failures(family_alpha / 12)
    assert false_statements <= misses  # a statement can be false only when an interval misses
    assert_coverage(false_statements, runs, family_alpha)
    assert_coverage(misses, runs, family_alpha)
    # the check has power: with alpha A for each image instead of A / 12 the family misses too often
    _, unsound = failures(family_alpha)
    assert stats.binomtest(unsound, runs, family_alpha, alternative="greater").pvalue < 0.001


# -- from rows -----------------------------------------------------------------------------------


def row(path: str, lower: float, upper: float, *, eps: float = 0.1, alpha: float = 0.01, **more) -> dict:
    return {"path": path, "lower": lower, "upper": upper, "median": (lower + upper) / 2, "eps": eps, "alpha": alpha,
            "clean": more.pop("clean", (lower + upper) / 2), "model": "m", "model_sha256": "x", "denoiser": None,
            "denoiser_sha256": None, "sigma": 0.25, "lower_better": more.pop("lower_better", False), **more}


def test_compare_from_rows():
    rows = [row("a1.png", 8, 9), row("a2.png", 7, 8), row("b1.png", 5, 6), row("b2.png", 7.5, 8.5),
            row("c1.png", 0, 1), row("c2.png", 1, 2), row("other.png", 0, 100)]
    table = {"a1.png": Assignment("A", "s1"), "./a2.png": Assignment("A", "s2"), "b1.png": Assignment("B", "s1"),
             "b2.png": Assignment("B", "s2"), "c1.png": Assignment("C", "s1"), "c2.png": Assignment("C", "s2")}
    (s,) = compare(rows, table, human={"a1.png": 9, "a2.png": 8, "b1.png": 6, "b2.png": 7, "c1.png": 1, "c2.png": 2})
    assert s.level == pytest.approx(0.06) and s.methods == ["A", "B", "C"]
    assert (s.mean_lower["A"], s.mean_upper["A"], s.mean_width["B"], s.max_width["C"]) == (7.5, 8.5, 1.0, 1.0)
    # A [7.5, 8.5] and B [6.25, 7.25]: A above B; both above C [0.5, 1.5]
    assert sorted(s.above) == [("A", "B"), ("A", "C"), ("B", "C")] and s.diagram == [("A", "B"), ("B", "C")]
    assert s.rank_best == {"A": 1, "B": 2, "C": 3} and s.rank_worst == {"A": 1, "B": 2, "C": 3}
    assert s.sources[("A", "B")] == (1, 0, 1) and s.sources[("A", "C")] == (2, 0, 0)
    assert s.kendall is not None and s.kendall.undecided == 4 and s.largest_eps[("A", "B")] == 0.1
    kinds = [r["kind"] for r in s.records()]
    assert kinds == ["family", "method", "method", "method", "pair", "pair", "pair", "human"]
    # lower is better: the same intervals give the reverse order
    flipped = [dict(r, lower_better="True") for r in rows]  # as CSV rows hold it
    (t,) = compare(flipped, table)
    assert sorted(t.above) == [("B", "A"), ("C", "A"), ("C", "B")]
    assert t.sources[("A", "B")] == (0, 1, 1)


def test_compare_refusals():
    table = {"a.png": Assignment("A"), "b.png": Assignment("B")}
    rows = [row("a.png", 1, 2), row("b.png", 3, 4)]
    with pytest.raises(LevelNotMet, match="add up to 0.02, more than the family level 0.01"):
        compare(rows, table, family_alpha=0.01)
    assert compare(rows, table, family_alpha=0.02)[0].level == 0.02
    with pytest.raises(ValueError, match="different smoothed models \\(sigma: 0.25, 0.5\\)"):
        compare([rows[0], dict(rows[1], sigma=0.5)], table)
    with pytest.raises(ValueError, match="record lower_better \\[False, True\\]"):
        compare([rows[0], dict(rows[1], lower_better=True)], table)
    with pytest.raises(ValueError, match="do not record whether lower scores are better; pass --lower-better"):
        compare([dict(r, lower_better=None) for r in rows], table)
    assert compare([dict(r, lower_better=None) for r in rows], table, lower_better=True)[0].above == [("A", "B")]
    with pytest.raises(ValueError, match="1 image\\(s\\) of the methods table have no row at eps 0.1 "
                                         "\\(first: b.png\\)"):
        compare(rows[:1], table)
    with pytest.raises(ValueError, match="a.png has two rows at eps 0.1"):
        compare(rows + rows[:1], table)
    with pytest.raises(ValueError, match="no result row belongs to an image of the methods table"):
        compare(rows, {"z.png": Assignment("Z")})
    with pytest.raises(ValueError, match="method 'A' has two images of source 's'"):
        compare(rows + [row("a2.png", 1, 2)], {"a.png": Assignment("A", "s"), "a2.png": Assignment("A", "s"),
                                                "b.png": Assignment("B", "s")})


def test_largest_eps_and_its_level():
    rows = [row("a.png", 5, 6, eps=e) for e in (0.1, 0.2)]
    rows += [row("b.png", 3, 4, eps=0.1), row("b.png", 5.5, 7, eps=0.2)]
    statements = compare(rows, {"a.png": Assignment("A"), "b.png": Assignment("B")})
    assert [s.eps for s in statements] == [0.1, 0.2]
    assert statements[0].above == [("A", "B")] and statements[1].above == []
    assert statements[1].largest_eps[("A", "B")] == 0.1 and statements[1].largest_eps_level == pytest.approx(0.04)
    assert [s.eps for s in compare(rows, {"a.png": Assignment("A"), "b.png": Assignment("B")}, eps=[0.2])] == [0.2]


# -- the command line ----------------------------------------------------------------------------


class MeanScore(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 100 * x.mean(dim=(1, 2, 3))


@pytest.fixture
def results(tmp_path):
    """Result files of 3 methods x 2 sources (brightness 0.8 / 0.5 / 0.2 of two random textures), the
    methods table and human scores."""
    rng = np.random.default_rng(0)
    table, human, paths = [], [], []
    for source in ("s1", "s2"):
        texture = rng.random((40, 40, 3))
        for method, level in (("bright", 0.8), ("mid", 0.5), ("dark", 0.2)):
            path = tmp_path / f"{method}_{source}.png"
            Image.fromarray((255 * np.clip(level + 0.1 * (texture - 0.5), 0, 1)).astype(np.uint8)).save(path)
            table.append({"path": str(path), "method": method, "source": source})
            human.append({"path": str(path), "mos": level * 10 + (source == "s2")})
            paths.append(str(path))
    provenance = {"model": "mean", "model_sha256": None, "lower_better": False, "score_range": [0, 100],
                  "denoiser": None, "denoiser_sha256": None}
    smoothed = SmoothedIQA(MeanScore(), 0.12, n=100, seed=0)
    for name, part in (("first.csv", paths[:3]), ("second.jsonl", paths[3:])):
        certify_paths(smoothed, part, [0.05, 0.5], out=tmp_path / name, provenance=provenance, progress=False,
                      log=lambda message: None, family_alpha=0.01)
    for name, rows_ in (("methods.csv", table), ("human.csv", human)):
        with open(tmp_path / name, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows_[0]))
            writer.writeheader()
            writer.writerows(rows_)
    return tmp_path


def test_compare_methods_end_to_end(results, capsys):
    pytest.importorskip("matplotlib")
    args = ["compare-methods", str(results / "first.csv"), str(results / "second.jsonl"), "--methods",
            str(results / "methods.csv"), "--human", str(results / "human.csv"), "--human-column", "mos",
            "--family-alpha", "0.02", "--out", str(results / "s.json"), "--plot", str(results / "s.png")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "eps 0.05: every statement below holds at family level 0.02 (the 6 images' alphas add up to 0.02)" in out
    assert "certified order (a > b: a is above b whatever eps-perturbation each image had): bright > mid, mid > dark" \
        in out
    assert "bright vs mid: above; per source 2 wins, 0 losses, 0 undecided" in out
    records = json.loads((results / "s.json").read_text())
    human = [r for r in records if r["kind"] == "human" and r["eps"] == 0.05]
    assert human[0]["krocc_lower"] > 0.5 and human[0]["images"] == 6
    assert (results / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the rows of both runs (family level 0.01 each) do not meet 0.01 together
    with pytest.raises(SystemExit, match="certiqa: error: the 6 images' alphas add up to 0.02, more than the family "
                                         "level 0.01 asked for"):
        main(args[:5] + ["--family-alpha", "0.01"])
    csv_out = results / "s.csv"
    assert main(args[:5] + ["--eps", "0.5", "--out", str(csv_out)]) == 0
    records = list(csv.DictReader(csv_out.open()))
    assert {r["eps"] for r in records} == {"0.5"} and records[0]["kind"] == "family"


def test_compare_methods_input_errors(results, tmp_path):
    first = str(results / "first.csv")
    with pytest.raises(SystemExit, match=r"certiqa: error: .*bad.csv: the methods table needs columns path and "
                                         r"method"):
        (tmp_path / "bad.csv").write_text("file,method\nx.png,A\n")
        main(["compare-methods", first, "--methods", str(tmp_path / "bad.csv")])
    with pytest.raises(SystemExit, match=r"certiqa: error: .*nothing.csv: no such results file\.$"):
        main(["compare-methods", str(tmp_path / "nothing.csv"), "--methods", str(results / "methods.csv")])
    (tmp_path / "junk.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit, match=r"junk.csv has no path and eps columns; it is not a certiqa results file\.$"):
        main(["compare-methods", str(tmp_path / "junk.csv"), "--methods", str(results / "methods.csv")])
    with pytest.raises(SystemExit, match="--out must end in .csv or .json"):
        main(["compare-methods", first, "--methods", str(results / "methods.csv"), "--out", "x.txt"])


def test_family_alpha_rows_and_every_rank_counts_the_full_set(results, tmp_path):
    rows = read_results(results / "first.csv")
    assert {r["family_alpha"] for r in rows} == {0.01} and {r["family_size"] for r in rows} == {3}
    assert [r["alpha"] for r in rows] == pytest.approx([0.01 / 3] * 6)
    # under torchrun each rank certifies every K-th image, but alpha is A / N with N all (distinct) images
    from certiqa.runner import _Run

    paths = [str(p) for p in sorted(results.glob("*_s1.png"))] * 2  # 3 images, each given twice
    for rank in (0, 1):
        plan = _Run(SmoothedIQA(MeanScore(), 0.12, n=10), paths, [0.1], out=tmp_path / "r.csv", provenance={},
                    extra={}, resume=False, overwrite=False, min_size=1, resize=None, max_noise_bytes=1 << 20,
                    group=Group(rank=rank, world_size=2), progress=False, log=lambda message: None,
                    sequential=None, family_alpha=0.03)
        assert plan.smoothed.alpha == pytest.approx(0.01) and plan.settings["family_size"] == 3


def test_certify_family_alpha_command_line(tmp_path, capsys):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(np.full((40, 48, 3), 60 * (i + 1), np.uint8)).save(paths[-1])
    out = tmp_path / "r.csv"
    base = ["certify", *map(str, paths), str(paths[0]), "--model", "default", "-n", "20", "--seed", "0", "--quiet",
            "--out", str(out)]
    assert main(base + ["--family-alpha", "0.03"]) == 0
    assert "alpha=0.01, family alpha=0.03 over 3 images" in capsys.readouterr().err  # the repeated file counts once
    rows = list(csv.DictReader(out.open()))
    assert {(r["alpha"], r["family_alpha"], r["family_size"]) for r in rows} == {("0.01", "0.03", "3")}
    with pytest.raises(SystemExit, match=r"--resume: .* was made with other settings \(family_size: file 3, this run "
                                         r"2; alpha: file 0.01, this run 0.015\)"):
        main(["certify", *map(str, paths[:2]), "--model", "default", "-n", "20", "--seed", "0", "--quiet", "--out",
              str(out), "--resume", "--family-alpha", "0.03"])
    with pytest.raises(SystemExit, match=r"family_alpha: file 0.03, this run \(none\)"):
        main(base + ["--resume", "--alpha", "0.01"])
    with pytest.raises(SystemExit, match="give --alpha \\(per image\\) or --family-alpha"):
        main(base + ["--alpha", "0.01", "--family-alpha", "0.03"])
    with pytest.raises(SystemExit, match="--family-alpha must lie strictly between 0 and 1, got 2.0"):
        main(base + ["--family-alpha", "2"])


# -- the demonstration ---------------------------------------------------------------------------


@pytest.mark.slow  # starts Python + torch, attacks and certifies 6 images
def test_gamed_benchmark_runs_on_two_tiny_images(tmp_path):
    pytest.importorskip("matplotlib")
    from conftest import REPO

    out = tmp_path / "gamed"
    images = [str(REPO / "examples" / "images" / name) for name in ("chelsea_clean.png", "coffee_blur3.png")]
    args = [sys.executable, "certify/gamed_benchmark.py", "--out", str(out), "--images", *images, "--crop", "48",
            "--qualities", "90", "10", "--attack-eps", "0.3", "--attack-steps", "2", "-n", "32", "--eps", "0.01",
            "--family-alpha", "0.1", "--device", "cpu"]
    done = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert "6 outputs (3 methods x 2 sources, 48x48); tuned = jpeg10 + PGD-l2 (eps 0.3, 2 steps)" in done.stdout
    assert "base model ranks:" in done.stdout and "smoothed model ranks:" in done.stdout
    table = list(csv.DictReader((out / "methods.csv").open()))
    assert sorted((r["method"], r["source"]) for r in table) == sorted(
        (m, s) for m in ("jpeg90", "jpeg10", "tuned") for s in ("chelsea_clean", "coffee_blur3"))
    rows = {r["path"]: r for r in read_results(out / "results.csv")}
    assert {(r["family_alpha"], r["family_size"]) for r in rows.values()} == {(0.1, 6)}
    for source in ("chelsea_clean", "coffee_blur3"):
        honest, tuned = (str(out / "images" / m / f"{source}.png") for m in ("jpeg10", "tuned"))
        pixels = [np.asarray(Image.open(p), dtype=float) / 255 for p in (honest, tuned)]
        # the attack's l2 size plus 8-bit rounding (at most half a level per value)
        assert 0 < np.linalg.norm(pixels[1] - pixels[0]) <= 0.3 + 0.5 / 255 * math.sqrt(pixels[0].size)
        assert rows[tuned]["clean"] > rows[honest]["clean"]  # the base model was pushed up
    assert (out / "statements.png").is_file() and "certified order" in (out / "summary.md").read_text()
    assert list(csv.DictReader((out / "statements.csv").open()))[0]["family_level"] == "0.1"
