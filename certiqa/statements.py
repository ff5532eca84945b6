"""Certified statements about sets of images and methods: which method ranks above which,
how much any manipulation could gain, and how far agreement with human scores can move.

Setting. Each image i has a certified interval [lower_i, upper_i] at radius eps
(``certiqa certify``): with probability >= 1 - alpha_i over its noise samples, the smoothed
score of every image within l2 distance eps of image i lies in it. All N intervals hold at
once with probability >= 1 - sum_i alpha_i (union bound, whatever the dependence), so every
statement below, being a deterministic consequence of the N intervals, holds at the
*family level* sum_i alpha_i over the images it uses (:func:`family_level`).

What "certified" covers. The interval of a submitted image x' contains the smoothed score of
x' and of every image within eps of it, the unmanipulated output among them. So a statement
certified here holds whatever perturbation of l2 norm <= eps was applied to each image
independently, before or after submission.

Direction. Every comparison is made on quality q (higher is better): q = s for a
higher-is-better model, q = -s for a lower-is-better one (:func:`quality_intervals`).

Exactness. Call the *box* the set of score vectors with each score in its interval. The
truth (the smoothed scores of the images and of their eps-neighbours) lies in the box at the
family level, so any bound that holds over the box is valid. A bound is *exact* when some
vector of the box attains it: then no statement from these intervals alone can be sharper.
Each function says which of its bounds are exact.

Functions here are pure: arrays in, arrays or numbers out (shapes in each docstring).
:func:`compare` assembles them from result rows; reading files and the command line are in
:mod:`certiqa.compare_methods`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata

__all__ = [
    "LevelNotMet",
    "FAMILY_RTOL",
    "family_level",
    "check_family_level",
    "quality_intervals",
    "certified_above",
    "rank_intervals",
    "covering_pairs",
    "source_outcomes",
    "score_rank_intervals",
    "KendallBounds",
    "kendall_bounds",
    "spearman_bounds",
    "ASSIGNMENT_LIMIT",
    "Assignment",
    "Statements",
    "compare",
]

# Largest number of images whose Spearman bounds are solved as an assignment problem (an N x N matrix).
ASSIGNMENT_LIMIT = 3000

# A requested family level is met when the rows' sum of alphas is at most level * (1 + FAMILY_RTOL)
# (N copies of A / N add up to A up to rounding).
FAMILY_RTOL = 1e-9


class LevelNotMet(ValueError):
    """The rows' per-image alphas add up to more than the family level asked for."""


def family_level(alphas: Sequence[float] | np.ndarray) -> float:
    """The level at which statements about these images hold: sum of their alphas (N,)
    (union bound: P[some interval fails] <= sum_i P[interval i fails])."""
    a = np.asarray(alphas, dtype=float)
    if a.ndim != 1 or a.size == 0 or not np.all((a > 0) & (a < 1)):
        raise ValueError(f"alphas must be a non-empty list of numbers in (0, 1), got {a.tolist()!r}.")
    return float(a.sum())


def check_family_level(alphas: Sequence[float] | np.ndarray, requested: float | None = None) -> float:
    """The family level a statement about these images holds at: ``requested`` when the
    alphas (N,) add up to no more (up to :data:`FAMILY_RTOL`), their sum when nothing is
    requested. Raises :class:`LevelNotMet` when the rows do not meet ``requested``."""
    met = family_level(alphas)
    if requested is None:
        return met
    if not 0 < requested < 1:
        raise ValueError(f"the family level must lie strictly between 0 and 1, got {requested!r}.")
    if met > requested * (1 + FAMILY_RTOL):
        raise LevelNotMet(
            f"the {len(alphas)} images' alphas add up to {met:.6g}, more than the family level {requested:g} "
            f"asked for; state the level they meet (--family-alpha {_round_up(met)}) or certify them again "
            f"with certiqa certify --family-alpha {requested:g}."
        )
    return float(requested)


def _round_up(x: float) -> str:
    """x to 3 significant digits, rounded up so that it is a level the rows meet, as text."""
    digits = 2 - math.floor(math.log10(x))
    value = round(x, digits)
    if value * (1 + FAMILY_RTOL) < x:
        value = round(value + 10.0**-digits, digits)
    return f"{value:g}"


def quality_intervals(lower: np.ndarray, upper: np.ndarray, lower_better: bool) -> tuple[np.ndarray, np.ndarray]:
    """Intervals (N,) of scores as intervals of quality (higher is better): unchanged for a
    higher-is-better model, [-upper, -lower] for a lower-is-better one."""
    lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    if lower.shape != upper.shape or lower.ndim != 1:
        raise ValueError(f"lower and upper must be 1-D arrays of one length, got shapes {lower.shape}, {upper.shape}.")
    if np.any(np.isnan(lower) | np.isnan(upper)) or np.any(lower > upper):
        raise ValueError("each interval must have lower <= upper and no NaN.")
    return (-upper, -lower) if lower_better else (lower, upper)


def certified_above(lo: np.ndarray, up: np.ndarray) -> np.ndarray:
    """``above[a, b]``: (M, M) bool, a is certainly above b, i.e. lo[a] > up[b] (quality
    intervals (M,)). Exact: when it is False some vector of the box has q_a <= q_b (a at
    up[a], b at lo[b]). The relation is transitive (lo_a > up_b >= lo_b > up_c)."""
    lo, up = np.asarray(lo, dtype=float), np.asarray(up, dtype=float)
    return lo[:, None] > up[None, :]


def rank_intervals(lo: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Certified ranks (1 = best) of M quality intervals (M,): ``best[a] = 1 + #{b certainly
    above a}`` and ``worst[a] = M - #{b certainly below a}``, both (M,) int.

    Every vector of the box ranks a in [best, worst] however ties are broken. Exact: best is
    attained with a at up[a] and every other b at lo[b] (only the b certainly above are
    strictly above); worst with a at lo[a] and every b at up[b] (every b not certainly below
    is at or above a, and ties broken against a)."""
    above = certified_above(lo, up)
    m = above.shape[0]
    return 1 + above.sum(axis=0), m - above.sum(axis=1)


def covering_pairs(above: np.ndarray) -> list[tuple[int, int]]:
    """The edges (a, b) of the certified order's diagram: a certainly above b with no c
    certainly between them (the transitive reduction of ``above``, (M, M) bool)."""
    above = np.asarray(above, dtype=bool)
    between = (above.astype(int) @ above.astype(int)) > 0
    return [(int(a), int(b)) for a, b in zip(*np.nonzero(above & ~between))]


def source_outcomes(lo_a: np.ndarray, up_a: np.ndarray, lo_b: np.ndarray, up_b: np.ndarray) -> tuple[int, int, int]:
    """Per source image, method A's output against method B's (quality intervals (S,), one
    entry per source both processed): (wins, losses, undecided) with a win when lo_a > up_b,
    a loss when up_a < lo_b. Exact per source (as :func:`certified_above`)."""
    wins = int(np.sum(np.asarray(lo_a) > np.asarray(up_b)))
    losses = int(np.sum(np.asarray(up_a) < np.asarray(lo_b)))
    return wins, losses, len(np.asarray(lo_a)) - wins - losses


def score_rank_intervals(lo: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ascending ranks (1 = lowest quality) of N images with quality intervals (N,):
    ``low[i] = 1 + #{j: up[j] < lo[i]}``, ``high[i] = N - #{j: lo[j] > up[i]}``, (N,) int.
    Every untied vector of the box ranks image i in [low[i], high[i]] (exact, as
    :func:`rank_intervals`)."""
    above = certified_above(lo, up)
    return 1 + above.sum(axis=1), len(above) - above.sum(axis=0)


@dataclass(frozen=True)
class KendallBounds:
    """Certified bounds on Kendall's tau between quality and human scores (see :func:`kendall_bounds`)."""

    lower: float
    upper: float
    concordant: int  # pairs certainly concordant
    discordant: int  # pairs certainly discordant
    undecided: int  # pairs with different human scores whose intervals overlap
    pairs: int  # all pairs, N (N - 1) / 2


def kendall_bounds(lo: np.ndarray, up: np.ndarray, human: np.ndarray) -> KendallBounds:
    """Bounds on Kendall's tau-a = (C - D) / P over the box, for N images with quality
    intervals ``lo``, ``up`` (N,) and human scores ``human`` (N,) (higher is better).

    C and D count the concordant and discordant pairs of the N (N - 1) / 2 = P pairs; a pair
    tied in either score counts in neither. When neither score has ties, tau-a equals the
    tau-b of :func:`certiqa.metrics.krocc` (scipy's kendalltau).

    A pair with human scores h_i < h_j is certainly concordant when up_i < lo_j, certainly
    discordant when up_j < lo_i, undecided otherwise (U pairs); human-tied pairs count 0
    whatever the scores. So over the box

        (C_cert - D_cert - U) / P  <=  tau-a  <=  (C_cert - D_cert + U) / P.

    Valid: each pair contributes +1, -1 or 0, and only undecided pairs can change sign.
    Conservative in general: making every undecided pair concordant at once may contradict a
    certainly discordant pair (h_a < h_b < h_c with a certainly above c, b overlapping both).
    Exact (proof sketch) for the upper bound when no pair is certainly discordant: sort the
    images by human score and set s_k = max(lo_k, s_{k-1} + d) for a small d > 0; this stays
    within every interval when lo_i < up_j for every i sorted before j, true when no pair is
    certainly discordant and no two intervals only touch (lo_i == up_j), and it makes every
    pair with different human scores concordant. Symmetrically the lower bound is exact when
    no pair is certainly concordant (sort by decreasing human score).
    """
    lo, up, h = (np.asarray(v, dtype=float) for v in (lo, up, human))
    if not lo.shape == up.shape == h.shape or lo.ndim != 1 or len(lo) < 2:
        raise ValueError(f"lo, up and human must be 1-D arrays of one length >= 2, got shapes "
                         f"{lo.shape}, {up.shape}, {h.shape}.")
    i, j = np.triu_indices(len(lo), 1)
    order = np.sign(h[j] - h[i])  # +1: j is better for humans
    j_above = lo[j] > up[i]
    i_above = lo[i] > up[j]
    concordant = int(np.sum((order > 0) & j_above) + np.sum((order < 0) & i_above))
    discordant = int(np.sum((order > 0) & i_above) + np.sum((order < 0) & j_above))
    undecided = int(np.sum(order != 0)) - concordant - discordant
    pairs = len(i)
    return KendallBounds((concordant - discordant - undecided) / pairs, (concordant - discordant + undecided) / pairs,
                         concordant, discordant, undecided, pairs)


def spearman_bounds(lo: np.ndarray, up: np.ndarray, human: np.ndarray) -> tuple[float, float]:
    """Bounds (lower, upper) on Spearman's rho between quality and human scores over the
    untied vectors of the box, for N images with quality intervals (N,) and human scores (N,).

    For an untied score vector the ranks r are a permutation of 1..N, so with m = (N + 1) / 2
    and g the human scores' (average) ranks, rho = sum_i r_i (g_i - m) / D with
    D = sqrt(sum (r - m)^2 sum (g - m)^2) = sqrt(N (N^2 - 1) / 12 sum (g - m)^2) fixed. Each
    r_i lies in its certified rank interval [low_i, high_i] (:func:`score_rank_intervals`).
    The extremes of the linear numerator over the permutations with r_i in [low_i, high_i]
    are an assignment problem (images to ranks, solved exactly by
    ``scipy.optimize.linear_sum_assignment``; above :data:`ASSIGNMENT_LIMIT` images, by the
    looser fractional knapsack that keeps only sum_i r_i = N m).

    Valid: the rank vector of every untied vector of the box is such a permutation.
    Conservative in general: not every such permutation is realised by scores within the
    intervals (it must also be a linear extension of the certified order, which the
    relaxation does not impose); exact when no two intervals overlap (one permutation) and
    when the overlaps form disjoint groups of images that all share more than a point (every
    permutation within a group is realised). Score vectors with ties use average ranks, a
    smaller sum (r - m)^2, and are not covered (they have probability 0 under continuous
    scores).
    """
    lo, up, h = (np.asarray(v, dtype=float) for v in (lo, up, human))
    if not lo.shape == up.shape == h.shape or lo.ndim != 1 or len(lo) < 2:
        raise ValueError(f"lo, up and human must be 1-D arrays of one length >= 2, got shapes "
                         f"{lo.shape}, {up.shape}, {h.shape}.")
    n = len(lo)
    g = rankdata(h) - (n + 1) / 2
    if not np.any(g):
        raise ValueError("the human scores are all equal; Spearman's rho is undefined.")
    low, high = score_rank_intervals(lo, up)
    denominator = math.sqrt(n * (n * n - 1) / 12 * float(np.sum(g * g)))
    ranks = np.arange(1, n + 1)

    def extreme(sign: float) -> float:
        if n <= ASSIGNMENT_LIMIT:
            allowed = (ranks[None, :] >= low[:, None]) & (ranks[None, :] <= high[:, None])
            cost = np.where(allowed, -sign * g[:, None] * ranks[None, :], np.inf)
            rows, cols = linear_sum_assignment(cost)
            r = np.empty(n)
            r[rows] = ranks[cols]
        else:
            r = low.astype(float)
            budget = n * (n + 1) / 2 - r.sum()
            for k in np.argsort(-sign * g, kind="stable"):
                step = min(high[k] - r[k], budget)
                r[k] += step
                budget -= step
        return float(np.clip(np.sum((r - (n + 1) / 2) * g) / denominator, -1.0, 1.0))

    return extreme(-1.0), extreme(1.0)


# -- from result rows -------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    """What an image is in a benchmark: the method that made it and, when methods process
    the same inputs, the source image it was made from."""

    method: str
    source: str | None = None


@dataclass
class Statements:
    """Every statement at one radius; see :func:`compare`. ``records`` flattens them for CSV/JSON."""

    eps: float
    level: float  # the family level they hold at
    met: float  # the rows' sum of alphas
    lower_better: bool
    methods: list[str]
    images: dict[str, int]
    mean_median: dict[str, float]
    mean_clean: dict[str, float | None]
    mean_lower: dict[str, float]  # in score units
    mean_upper: dict[str, float]
    mean_width: dict[str, float]
    max_width: dict[str, float]
    rank_best: dict[str, int]
    rank_worst: dict[str, int]
    above: list[tuple[str, str]]  # (a, b): a certainly above b
    diagram: list[tuple[str, str]]  # its covering pairs
    sources: dict[tuple[str, str], tuple[int, int, int]] = field(default_factory=dict)
    kendall: KendallBounds | None = None
    spearman: tuple[float, float] | None = None
    human_images: int = 0
    largest_eps: dict[tuple[str, str], float | None] = field(default_factory=dict)
    largest_eps_level: float | None = None

    def records(self) -> list[dict[str, Any]]:
        """One dict per statement: kind = family, method, pair or human."""
        base = {"eps": self.eps, "family_level": self.level}
        out: list[dict[str, Any]] = [{"kind": "family", **base, "alpha_sum": self.met,
                                      "lower_better": self.lower_better, "largest_eps_level": self.largest_eps_level}]
        for m in self.methods:
            out.append({"kind": "method", **base, "method": m, "images": self.images[m],
                        "mean_median": self.mean_median[m], "mean_clean": self.mean_clean[m],
                        "mean_lower": self.mean_lower[m], "mean_upper": self.mean_upper[m],
                        "mean_width": self.mean_width[m], "max_width": self.max_width[m],
                        "rank_best": self.rank_best[m], "rank_worst": self.rank_worst[m]})
        above = set(self.above)
        for x, a in enumerate(self.methods):
            for b in self.methods[x + 1:]:
                wins, losses, undecided = self.sources.get((a, b), (None, None, None))
                out.append({"kind": "pair", **base, "method": a, "other": b,
                            "certified": "above" if (a, b) in above else "below" if (b, a) in above else "undecided",
                            "source_wins": wins, "source_losses": losses, "source_undecided": undecided,
                            "largest_eps": self.largest_eps.get((a, b))})
        if self.kendall is not None and self.spearman is not None:
            k = self.kendall
            out.append({"kind": "human", **base, "images": self.human_images, "krocc_lower": k.lower,
                        "krocc_upper": k.upper, "concordant": k.concordant, "discordant": k.discordant,
                        "undecided": k.undecided, "pairs": k.pairs, "srocc_lower": self.spearman[0],
                        "srocc_upper": self.spearman[1]})
        return out


_SAME = ("model", "model_sha256", "denoiser", "denoiser_sha256", "sigma")


def _flag(value: Any) -> bool | None:
    """lower_better as recorded: a bool in JSON rows, 'True' / 'False' text in CSV rows."""
    if value is None or isinstance(value, bool):
        return value
    if str(value) in ("True", "False"):
        return str(value) == "True"
    raise ValueError(f"lower_better must be True or False, got {value!r}.")


def _key(path: str) -> str:
    return os.path.normpath(path)


def compare(
    rows: Sequence[Mapping[str, Any]],
    assignments: Mapping[str, Assignment],
    *,
    human: Mapping[str, float] | None = None,
    eps: Sequence[float] | None = None,
    family_alpha: float | None = None,
    lower_better: bool | None = None,
) -> list[Statements]:
    """The statements at each radius of ``rows`` (or the radii ``eps``) about the images of
    ``assignments`` (path -> :class:`Assignment`; paths are matched after
    ``os.path.normpath``; rows of other images are left out).

    Per method: the mean smoothed score (median) and its certified interval [mean of lowers,
    mean of uppers] (exact: each image may take either end), the mean clean score of the
    base model (no noise, no denoiser, not certified), the manipulation bound (mean and max
    certified width: no perturbation of size <= eps of an output moves its smoothed score,
    nor the mean, by more) and the certified rank interval. Per pair of methods: certainly
    above / below / undecided, per-source wins / losses / undecided, and the largest radius
    of ``rows`` at which their order is certified (that statement, chosen among R radii,
    holds at R times the level: ``largest_eps_level``). Against ``human`` scores (path ->
    score, higher is better): :func:`kendall_bounds` and :func:`spearman_bounds`.

    Every statement at one radius holds at the family level of its rows
    (:func:`check_family_level`: ``family_alpha`` when their alphas add up to no more, else
    :class:`LevelNotMet`). The rows must come from one smoothed model (model, denoiser, sigma
    and lower_better agree); ``lower_better`` is used only when the rows do not record it.
    """
    by_path = {_key(p): a for p, a in assignments.items()}
    humans = {_key(p): float(s) for p, s in (human or {}).items()}
    used = [r for r in rows if _key(str(r["path"])) in by_path]
    if not used:
        raise ValueError("no result row belongs to an image of the methods table; check that the table's paths are "
                         "those the certify run was given.")
    for column in _SAME:
        values = {str(r.get(column)) for r in used}
        if len(values) > 1:
            raise ValueError(f"the rows come from different smoothed models ({column}: {', '.join(sorted(values))}); "
                             "compare methods with one model, one denoiser and one sigma.")
    recorded = {_flag(r.get("lower_better")) for r in used} - {None}
    if len(recorded) > 1 or (recorded and lower_better is not None and recorded != {lower_better}):
        raise ValueError(f"the rows record lower_better {sorted(recorded)} but {lower_better} was given; the rows "
                         "must agree, and an override only fills in rows that do not record it.")
    direction = recorded.pop() if recorded else lower_better
    if direction is None:
        raise ValueError("the rows do not record whether lower scores are better; pass --lower-better or "
                         "--higher-better.")
    radii = sorted({float(r["eps"]) for r in used}) if eps is None else sorted(set(float(e) for e in eps))
    per_eps: dict[float, dict[str, Mapping[str, Any]]] = {}
    for e in radii:
        images: dict[str, Mapping[str, Any]] = {}
        for r in used:
            if float(r["eps"]) == e:
                key = _key(str(r["path"]))
                if key in images:
                    raise ValueError(f"{r['path']} has two rows at eps {e:g}; give each image's results once.")
                images[key] = r
        missing = sorted(set(by_path) - set(images))
        if missing:
            raise ValueError(f"{len(missing)} image(s) of the methods table have no row at eps {e:g} "
                             f"(first: {missing[0]}); certify them at that radius or leave them out of the table.")
        per_eps[e] = images
    statements = [_at(e, per_eps[e], by_path, humans, family_alpha, direction) for e in radii]
    _add_largest_eps(statements)
    return statements


def _at(eps: float, images: Mapping[str, Mapping[str, Any]], by_path: Mapping[str, Assignment],
        humans: Mapping[str, float], family_alpha: float | None, lower_better: bool) -> Statements:
    paths = list(images)
    alphas = [float(images[p]["alpha"]) for p in paths]
    level = check_family_level(alphas, family_alpha)
    lower = np.array([float(images[p]["lower"]) for p in paths])
    upper = np.array([float(images[p]["upper"]) for p in paths])
    lo, up = quality_intervals(lower, upper, lower_better)
    methods = sorted({by_path[p].method for p in paths})
    member = {m: np.array([by_path[p].method == m for p in paths]) for m in methods}

    def mean(column: str, m: str) -> float | None:
        values = [images[p].get(column) for p, inside in zip(paths, member[m]) if inside]
        return None if any(v is None for v in values) else float(np.mean([float(v) for v in values]))

    mean_lo = np.array([lo[member[m]].mean() for m in methods])
    mean_up = np.array([up[member[m]].mean() for m in methods])
    above = certified_above(mean_lo, mean_up)
    best, worst = rank_intervals(mean_lo, mean_up)
    width = upper - lower
    result = Statements(
        eps=eps, level=level, met=float(sum(alphas)), lower_better=lower_better, methods=methods,
        images={m: int(member[m].sum()) for m in methods},
        mean_median={m: mean("median", m) for m in methods}, mean_clean={m: mean("clean", m) for m in methods},
        mean_lower={m: float(lower[member[m]].mean()) for m in methods},
        mean_upper={m: float(upper[member[m]].mean()) for m in methods},
        mean_width={m: float(width[member[m]].mean()) for m in methods},
        max_width={m: float(width[member[m]].max()) for m in methods},
        rank_best={m: int(b) for m, b in zip(methods, best)}, rank_worst={m: int(w) for m, w in zip(methods, worst)},
        above=[(methods[a], methods[b]) for a, b in zip(*np.nonzero(above))],
        diagram=[(methods[a], methods[b]) for a, b in covering_pairs(above)],
    )
    source_of = {p: by_path[p].source for p in paths}
    if any(s is not None for s in source_of.values()):
        index: dict[tuple[str, str], int] = {}
        for k, p in enumerate(paths):
            if source_of[p] is None:
                continue
            slot = (by_path[p].method, source_of[p])
            if slot in index:
                raise ValueError(f"method {slot[0]!r} has two images of source {slot[1]!r} "
                                 f"({paths[index[slot]]} and {p}); give each method one output per source.")
            index[slot] = k
        for x, a in enumerate(methods):
            for b in methods[x + 1:]:
                shared = sorted({s for (m, s) in index if m == a} & {s for (m, s) in index if m == b})
                if not shared:
                    continue
                ia, ib = [index[(a, s)] for s in shared], [index[(b, s)] for s in shared]
                result.sources[(a, b)] = source_outcomes(lo[ia], up[ia], lo[ib], up[ib])
    scored = [k for k, p in enumerate(paths) if p in humans]
    if humans and len(scored) >= 2:
        h = np.array([humans[paths[k]] for k in scored])
        result.kendall = kendall_bounds(lo[scored], up[scored], h)
        result.spearman = spearman_bounds(lo[scored], up[scored], h)
        result.human_images = len(scored)
    return result


def _add_largest_eps(statements: list[Statements]) -> None:
    """Per pair, the largest radius whose statements certify the pair's order (either way);
    chosen among all radii, it holds at the sum of their levels."""
    level = sum(s.met for s in statements)
    for s in statements:
        s.largest_eps_level = level
    methods = statements[0].methods
    for x, a in enumerate(methods):
        for b in methods[x + 1:]:
            decided = [s.eps for s in statements if (a, b) in s.above or (b, a) in s.above]
            for s in statements:
                s.largest_eps[(a, b)] = max(decided) if decided else None
