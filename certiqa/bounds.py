"""The certification math of median (percentile) smoothing, apart from any sampling.

Setting (Chiang et al. 2020, "Detection as regression: certified object detection
by median smoothing"): f maps an image to a score, G ~ N(0, sigma^2 I), and

    h_p(x) = inf{y : P[f(x + G) <= y] >= p}

is the p-th percentile of the scores of the noisy copies of x. For every delta
with ||delta||_2 <= eps,

    h_{p_lower}(x) <= h_p(x + delta) <= h_{p_upper}(x),
    p_lower = Phi(Phi^-1(p) - eps / sigma),  p_upper = Phi(Phi^-1(p) + eps / sigma).

The two outer percentiles are unknown; from n samples y_(1) <= ... <= y_(n) of
f(x + G) they are bounded by order statistics whose ranks come from exact binomial
tails (:func:`bound_ranks`), or for all levels at once by a
Dvoretzky-Kiefer-Wolfowitz band (:func:`dkw_epsilon`, :func:`dkw_ranks`).

All ranks here are 1-based: rank k names y_(k), the k-th smallest sample, which is
``sorted_samples[..., k - 1]`` in Python.
"""

from __future__ import annotations

import hashlib
import math
from fractions import Fraction
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.stats import beta as beta_distribution
from scipy.stats import binom, norm

from ._checks import check_int, check_nonnegative, check_open_unit, check_positive

__all__ = [
    "percentile_levels",
    "bound_ranks",
    "dkw_epsilon",
    "dkw_ranks",
    "dkw_radius",
    "inward_interval",
    "CERTIFIED",
    "NOT_CERTIFIABLE",
    "FUTILE",
    "UNDECIDED",
    "DECISIONS",
    "SPENDING",
    "FUTILITY",
    "SequentialScheme",
    "DEFAULT_SCHEME",
    "FUTILITY_SHARE",
    "FINAL_SHARE",
    "fixed_n_reason",
    "decision_reason",
    "POWER_DRAWS",
    "inner_ranks",
    "prediction_levels",
    "futility_setting",
    "conditional_power",
    "look_sizes",
    "look_alphas",
    "Look",
    "single_look",
    "sequential_looks",
    "certificate_miss_probability",
    "LookOutcome",
    "look_decisions",
    "SequentialOutcome",
    "run_sequential",
    "sequential_decisions",
]


def percentile_levels(eps: float, sigma: float, p: float = 0.5) -> tuple[float, float]:
    """Percentile levels that bound h_p under any l2 perturbation of norm <= eps.

    Returns ``(p_lower, p_upper)`` with ``p_lower = Phi(Phi^-1(p) - eps/sigma)`` and
    ``p_upper = Phi(Phi^-1(p) + eps/sigma)``: for all ||delta||_2 <= eps,
    ``h_{p_lower}(x) <= h_p(x + delta) <= h_{p_upper}(x)``.
    """
    check_nonnegative("eps", eps)
    check_positive("sigma", sigma)
    check_open_unit("p", p)
    z = float(norm.ppf(p))
    return float(norm.cdf(z - eps / sigma)), float(norm.cdf(z + eps / sigma))


def bound_ranks(
    n: int, sigma: float, eps: float, alpha: float, p: float = 0.5
) -> tuple[int | None, int | None]:
    """1-based ranks of the order statistics that certify h_p within radius eps.

    ``k_lower`` is the largest k with ``P[Binomial(n, p_lower) >= k] >= 1 - alpha/2``
    and ``k_upper`` the smallest k with ``P[Binomial(n, p_upper) <= k - 1] >= 1 - alpha/2``;
    a side is ``None`` when no rank in 1..n qualifies (n too small for alpha): that
    side is then not certified and must be reported as -inf / +inf.

    Guarantee: if y_(1) <= ... <= y_(n) are sorted i.i.d. samples of f(x + G), then
    with probability >= 1 - alpha over the sampling, for every delta with
    ||delta||_2 <= eps,

        y_(k_lower) <= h_p(x + delta) <= y_(k_upper).

    Proof sketch: y_(k) <= h_{p_lower}(x) as soon as at least k samples fall at or
    below that percentile, and their number is Binomial(n, q) with q >= p_lower;
    the upper side is symmetric with "fewer than k samples strictly below".
    """
    check_int("n (the number of noise samples)", n)
    check_open_unit("alpha", alpha)
    p_lower, p_upper = percentile_levels(eps, sigma, p)
    ks = np.arange(1, int(n) + 1)
    confidence = 1.0 - alpha / 2.0
    # These are 1-based ranks. Published median-smoothing code indexes the sorted
    # array 0-based with the same k (sorted[k_lower]), which picks y_(k_lower + 1):
    # one sample too high, i.e. optimistic, on the lower side. Callers here must
    # read sorted[..., k - 1].
    lower_ok = binom.sf(ks - 1, n, p_lower) >= confidence  # P[B >= k], decreasing in k
    upper_ok = binom.cdf(ks - 1, n, p_upper) >= confidence  # P[B <= k-1], increasing in k
    k_lower = int(ks[lower_ok][-1]) if lower_ok.any() else None
    k_upper = int(ks[upper_ok][0]) if upper_ok.any() else None
    return k_lower, k_upper


def fixed_n_reason(n: int, sigma: float, eps: float, alpha: float) -> str | None:
    """Why the fixed-n certificate (:func:`bound_ranks`) certifies nothing at these settings;
    None where it certifies (then both sides are finite, whatever the samples).

    ``"n too small for alpha"`` where even eps = 0 has no rank (n < log2(2 / alpha)), with
    the n needed; otherwise ``"eps too large for sigma and n"``, with the largest radius n
    samples certify at sigma: sigma * Phi^-1((alpha / 2)^(1 / n)), from
    P[Binomial(n, p_lower) >= 1] >= 1 - alpha / 2.
    """
    if None not in bound_ranks(n, sigma, eps, alpha):
        return None
    if None in bound_ranks(n, sigma, 0.0, alpha):
        needed = int(n) + 1
        while None in bound_ranks(needed, sigma, 0.0, alpha):
            needed += 1
        return f"n too small for alpha (n >= {needed} needed at alpha {alpha:g})"
    largest = sigma * float(norm.ppf((alpha / 2.0) ** (1.0 / n)))
    if largest > 0:  # shown rounded down to 3 significant digits, so the figure shown certifies
        scale = 10.0 ** (2 - math.floor(math.log10(largest)))
        largest = math.floor(largest * scale) / scale
    return f"eps too large for sigma and n (at most {largest:g} at sigma {sigma:g}, n {n})"


def dkw_epsilon(n: int, alpha: float) -> float:
    """Half-width of the Dvoretzky-Kiefer-Wolfowitz band (Massart's constant).

    With probability >= 1 - alpha, ``sup_y |F_n(y) - F(y)| <= sqrt(ln(2/alpha) / (2n))``
    where F_n is the empirical CDF of n i.i.d. samples: one event for every level
    (and so every eps) at once.
    """
    check_int("n (the number of noise samples)", n)
    check_open_unit("alpha", alpha)
    return math.sqrt(math.log(2.0 / alpha) / (2.0 * n))


def dkw_ranks(n: int, level: float, band: float) -> tuple[int | None, int | None]:
    """1-based ranks bracketing the ``level`` percentile inside a DKW band.

    On the event ``sup |F_n - F| <= band``: ``y_(k_lo) <= h_level <= y_(k_hi)`` with
    ``k_lo = ceil(n (level - band))`` and ``k_hi = ceil(n (level + band))``; a side
    is ``None`` when its rank leaves 1..n (that side is unbounded).
    """
    check_int("n (the number of noise samples)", n)
    # The lower rank is rounded down by a hair so that float error in n*(level-band)
    # can only make it smaller (more conservative), never larger.
    k_lo = math.ceil(n * (level - band) - 1e-9)
    k_hi = math.ceil(n * (level + band))
    return (k_lo if k_lo >= 1 else None), (k_hi if k_hi <= n else None)


def dkw_radius(n: int, k_min: int, k_max: int, sigma: float, alpha: float, p: float = 0.5) -> float:
    """Largest radius at which the DKW bounds stay inside the ranks ``[k_min, k_max]``.

    For eps >= 0 the DKW bounds of h_p(x + delta), ||delta||_2 <= eps, are
    ``y_(k_lo(eps))`` and ``y_(k_hi(eps))`` (:func:`dkw_ranks` at levels p_lower(eps),
    p_upper(eps)). Returns the supremum R of the eps with ``k_lo(eps) >= k_min`` and
    ``k_hi(eps) <= k_max``, or 0.0 when even eps = 0 fails. Since the DKW event covers
    every level at once, with probability >= 1 - alpha the bounds hold for every
    eps < R simultaneously.
    """
    check_int("n (the number of noise samples)", n)
    check_positive("sigma", sigma)
    check_open_unit("alpha", alpha)
    check_open_unit("p", p)
    band = dkw_epsilon(n, alpha)
    z = float(norm.ppf(p))
    t_lower = (k_min - 1) / n + band  # need p_lower(eps) > t_lower
    t_upper = k_max / n - band  # need p_upper(eps) <= t_upper
    if t_lower >= 1.0 or t_upper <= 0.0:
        return 0.0
    radius = sigma * min(z - float(norm.ppf(t_lower)), float(norm.ppf(t_upper)) - z)
    return max(radius, 0.0)


def inward_interval(center: float, delta: float) -> tuple[float, float]:
    """Float64 ends ``(lo, hi)`` of the real interval [center - delta, center + delta], rounded inward.

    ``lo`` is the smallest float64 >= center - delta and ``hi`` the largest float64
    <= center + delta, both computed exactly (rational arithmetic), so that for every
    float64 s: ``lo <= s <= hi`` if and only if ``|s - center| <= delta`` exactly.
    Computing ``center - delta`` in floating point instead can round outward and let
    a sample farther than delta count as inside (with bfloat16 scores, 89.5 - 0.3
    rounds to 89.0).
    """
    if not (math.isfinite(center) and math.isfinite(delta)) or delta < 0:
        raise ValueError(f"center must be finite and delta finite and >= 0, got center={center!r}, delta={delta!r}.")
    exact_lo = Fraction(center) - Fraction(delta)
    exact_hi = Fraction(center) + Fraction(delta)
    lo, hi = float(exact_lo), float(exact_hi)  # correctly rounded to nearest
    if Fraction(lo) < exact_lo:
        lo = math.nextafter(lo, math.inf)
    if Fraction(hi) > exact_hi:
        hi = math.nextafter(hi, -math.inf)
    return lo, hi
# --- Sequential certification -----------------------------------------------------------------
#
# A group-sequential scheme over the exact binomial ranks above. Samples of one image
# are an i.i.d. stream y_1, y_2, ... of f(x + G); look j reads its first n_j values
# (n_j = ceil(n0 * g^j), the last look n_max) and spends alpha_j of the
# budget alpha, with sum_j alpha_j <= alpha. At look j every statement below holds with
# probability >= 1 - alpha_j, so by the union bound every statement of every look holds at
# once with probability >= 1 - alpha. On that event whatever the procedure reports at the
# look where it stops is true, whatever rule chose that look (the looks' statements
# are fixed before any sample is seen; the rule may use the samples in any way).

CERTIFIED = "certified"
NOT_CERTIFIABLE = "not certifiable"
FUTILE = "futile"
UNDECIDED = "undecided"
DECISIONS = (CERTIFIED, NOT_CERTIFIABLE, FUTILE, UNDECIDED)
SPENDING = ("equal", "decreasing", "final")
FUTILITY = ("proof", "prediction", "power")
FUTILITY_SHARE = 0.5  # part of a look's alpha given to the "not certifiable" test where it can fire
FINAL_SHARE = 0.5  # spending="final": part of alpha kept for the last look (n_max)
POWER_DRAWS = 200  # futility="power": predictive draws per image and look


@dataclass(frozen=True)
class SequentialScheme:
    """How a sequential certification looks and stops (all but delta and n_max): the one
    place of the defaults of ``certify_sequential``, ``certify_paths`` and ``certiqa certify --delta``.

    The defaults are the scheme that measured the fewest samples with at most 5 % of the
    decisions differing from fixed n (docs/sequential-defaults.md): first look n0 = 32
    samples, looks growing by 1.25, half of alpha kept for the last look ("final"), and the
    "power" futility test at 0.05, whose "futile" is an estimate with no error bound (the
    certificates keep their guarantee). ``futility="proof"`` stops an image only where it is
    proven not certifiable (within alpha); ``"prediction"`` bounds the chance that "futile"
    is wrong by ``futility_error``. Arguments: :func:`sequential_looks`.
    """

    n0: int = 32
    growth: float = 1.25
    spending: str = "final"
    futility: str = "power"
    futility_error: float = 0.05


DEFAULT_SCHEME = SequentialScheme()


def inner_ranks(
    n: int, sigma: float, eps: float, alpha: float, p: float = 0.5
) -> tuple[int | None, int | None]:
    """1-based ranks of the inner order statistics that bound h_{p_upper} - h_{p_lower} from below.

    ``k_inner_lower`` is the smallest k with ``P[Binomial(n, p_lower) <= k - 1] >= 1 - alpha/2``
    and ``k_inner_upper`` the largest k with ``P[Binomial(n, p_upper) >= k] >= 1 - alpha/2``
    (the ranks :func:`bound_ranks` would give on the other side of each level); a side is
    ``None`` when no rank in 1..n qualifies.

    Guarantee: for sorted i.i.d. samples y_(1) <= ... <= y_(n) of f(x + G), with
    probability >= 1 - alpha, ``y_(k_inner_lower) >= h_{p_lower}(x)`` and
    ``y_(k_inner_upper) <= h_{p_upper}(x)``, hence

        h_{p_upper}(x) - h_{p_lower}(x) >= y_(k_inner_upper) - y_(k_inner_lower).

    Proof sketch: y_(k) < h_q only if at least k samples fall strictly below h_q, a
    Binomial(n, q') count with q' <= q, so its probability is at most
    ``P[Binomial(n, q) >= k] <= alpha/2`` at k = k_inner_lower, q = p_lower; the other
    side is symmetric with "fewer than k samples at or below h_q".
    """
    check_int("n (the number of noise samples)", n)
    check_open_unit("alpha", alpha)
    return _inner_ranks_at(n, *percentile_levels(eps, sigma, p), alpha)


def _inner_ranks_at(n: int, level_lower: float, level_upper: float, alpha: float) -> tuple[int | None, int | None]:
    """:func:`inner_ranks` for the levels h_{level_lower}, h_{level_upper} (same guarantee)."""
    ks = np.arange(1, int(n) + 1)
    confidence = 1.0 - alpha / 2.0
    lower_ok = binom.cdf(ks - 1, n, level_lower) >= confidence  # P[B <= k-1], increasing in k
    upper_ok = binom.sf(ks - 1, n, level_upper) >= confidence  # P[B >= k], decreasing in k
    k_inner_lower = int(ks[lower_ok][0]) if lower_ok.any() else None
    k_inner_upper = int(ks[upper_ok][-1]) if upper_ok.any() else None
    return k_inner_lower, k_inner_upper


def prediction_levels(n_max: int, sigma: float, eps: float, alpha: float, gamma: float) -> tuple[float, float]:
    """Levels (a, b) that the fixed-n certificate's order statistics reach with probability >= 1 - gamma.

    With ``(k_lower, k_upper) = bound_ranks(n_max, sigma, eps, alpha)``, ``a`` is the smallest
    level with ``P[Binomial(n_max, a) <= k_lower - 1] <= gamma/2`` and ``b`` the largest with
    ``P[Binomial(n_max, b) >= k_upper] <= gamma/2``; in closed form ``a = BetaInv(1 - gamma/2;
    k_lower, n_max - k_lower + 1)`` and ``b = BetaInv(gamma/2; k_upper, n_max - k_upper + 1)``.

    Guarantee: for n_max sorted i.i.d. samples of f(x + G), with probability >= 1 - gamma,
    ``y_(k_lower) <= h_a(x)`` and ``y_(k_upper) >= h_b(x)``, so the fixed-n interval is at least
    h_b - h_a wide, and where h_b - h_a > 2 delta it certifies nothing within +-delta.

    Proof sketch: y_(k) > h_a only if fewer than k samples fall at or below h_a, a
    Binomial(n_max, q) count with q >= a, so its probability is at most
    ``P[Binomial(n_max, a) <= k - 1]``; y_(k) < h_b only if at least k fall strictly below
    h_b, a Binomial(n_max, q') count with q' <= b. ``P[Binomial(n, a) <= k - 1]`` is
    ``1 - BetaCDF(a; k, n - k + 1)``.

    Raises ValueError when n_max samples certify no side at ``alpha``.
    """
    check_open_unit("gamma", gamma)
    k_lower, k_upper = bound_ranks(n_max, sigma, eps, alpha)
    if k_lower is None or k_upper is None:
        raise ValueError(
            f"n_max={n_max} samples certify no interval at eps={eps}, sigma={sigma}, alpha={alpha}: "
            "there is no fixed-n certificate to predict; raise n_max."
        )
    a = float(beta_distribution.ppf(1.0 - gamma / 2.0, k_lower, n_max - k_lower + 1))
    b = float(beta_distribution.ppf(gamma / 2.0, k_upper, n_max - k_upper + 1))
    return a, b


def futility_setting(futility: str, futility_error: float) -> str:
    """The futility test as one word for tables: ``"proof"``, or ``"prediction E"`` (E its error)."""
    if futility not in FUTILITY:
        raise ValueError(f"futility must be one of {FUTILITY}, got {futility!r}.")
    return futility if futility == "proof" else f"{futility} {futility_error:g}"


def decision_reason(decision: str, futility: str, futility_error: float) -> str | None:
    """What a sequential decision means, for result tables; None for "certified".

    "futile" says whether it has an error bound: with ``futility="prediction"`` the chance
    that fixed n would have certified is <= ``futility_error``; with ``"power"`` there is none.
    """
    if decision == CERTIFIED:
        return None
    if decision == NOT_CERTIFIABLE:
        return "not certifiable: proven to move more than +-delta within eps (no n certifies it)"
    if decision == UNDECIDED:
        return "undecided: neither certified nor ruled out at n_max (raise n_max or delta)"
    if decision != FUTILE:
        raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}.")
    if futility == "prediction":
        return f"futile: n_max samples would not certify (wrong with probability <= {futility_error:g})"
    if futility == "power":
        return f"futile: n_max samples estimated to certify with probability < {futility_error:g} (no error bound)"
    raise ValueError(f"a futile decision needs futility 'prediction' or 'power', got {futility!r}.")


def conditional_power(
    sorted_samples: np.ndarray, n_final: int, k_lower: int, k_upper: int, delta: float, draws: int = POWER_DRAWS
) -> np.ndarray:
    """Per row, the predictive probability that n_final samples would certify within +-delta.

    Row i holds the first n (< n_final) of an i.i.d. stream, sorted. Its remaining
    n_final - n samples are drawn from the Bayesian-bootstrap predictive of those n (a Polya
    urn: multiplicities 1 + Multinomial(n_final - n, Dirichlet(1, ..., 1))), ``draws`` times;
    the result is the fraction of draws in which the fixed-n certificate on all n_final,
    ``y_(k_lower) >= y_(ceil(n_final/2)) - delta`` and ``y_(k_upper) <= y_(ceil(n_final/2)) + delta``,
    certifies. Shape (A,), float64, in [0, 1].

    An estimate, with no guarantee: it is the conditional power of group-sequential trials,
    used to give up on images that more samples would very likely not certify. The random
    draws are seeded by the row's bytes, so a row always gets the same value (a live run and a
    replay of the same samples agree).
    """
    samples = np.asarray(sorted_samples, dtype=np.float64)
    if samples.ndim != 2 or samples.shape[1] < 1:
        raise ValueError(f"sorted_samples must have shape (A, n) with n >= 1, got {tuple(samples.shape)}.")
    n = samples.shape[1]
    n_final = check_int("n_final", n_final)
    if n_final <= n:
        raise ValueError(f"n_final must exceed the samples per row ({n}), got {n_final}.")
    if not 1 <= k_lower <= k_upper <= n_final:
        raise ValueError(f"need 1 <= k_lower <= k_upper <= n_final={n_final}, got k_lower={k_lower}, k_upper={k_upper}.")
    delta = check_nonnegative("delta", delta)
    draws = check_int("draws", draws)
    ranks = np.array([k_lower, math.ceil(n_final / 2), k_upper])
    out = np.empty(samples.shape[0])
    for i, row in enumerate(samples):
        rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little"))
        counts = rng.multinomial(n_final - n, rng.dirichlet(np.ones(n), size=draws)) + 1  # (draws, n)
        cumulative = np.cumsum(counts, axis=1)
        lower, median, upper = (row[np.argmax(cumulative >= k, axis=1)] for k in ranks)  # y_(k) of each draw
        out[i] = np.mean((lower >= median - delta) & (upper <= median + delta))
    return out


def look_sizes(n0: int, n_max: int, growth: float = DEFAULT_SCHEME.growth) -> tuple[int, ...]:
    """Sample counts of the looks: the distinct ceil(n0 g^j), j = 0, 1, ..., below n_max, then n_max.

    ``look_sizes(64, 1000, 2) == (64, 128, 256, 512, 1000)``; ``look_sizes(n, n) == (n,)``;
    ``look_sizes(32, 100, 1.25) == (32, 40, 50, 63, 79, 98, 100)``.
    """
    n0 = check_int("n0 (the samples of the first look)", n0)
    n_max = check_int("n_max (the samples of the last look)", n_max)
    if n0 > n_max:
        raise ValueError(f"n0 must be <= n_max, got n0={n0} > n_max={n_max}; lower n0 or raise n_max.")
    if not (isinstance(growth, (int, float)) and math.isfinite(growth) and growth > 1):
        raise ValueError(f"growth (n_(j+1) / n_j) must be a finite number > 1, got {growth!r}.")
    sizes: list[int] = []
    j = 0
    while (n := math.ceil(round(n0 * growth**j, 9))) < n_max:
        if not sizes or n > sizes[-1]:
            sizes.append(n)
        j += 1
    return (*sizes, n_max)


def look_alphas(looks: int, alpha: float, spending: str = "equal") -> tuple[float, ...]:
    """How the failure probability ``alpha`` is spent over ``looks`` looks (sums to alpha).

    - ``"equal"``: alpha / looks at every look.
    - ``"decreasing"``: alpha / 2, alpha / 4, ... and the last look gets the rest
      (alpha / 2^(looks - 1)), so early looks, where few samples make every rank
      expensive, get more of the budget, and the last look (n_max) less.
    - ``"final"``: ``FINAL_SHARE`` (half) of alpha to the last look, the rest in equal parts
      to the others (all of it when there is one look), so that many looks cost the last
      look, which settles the borderline images, little: its ranks stay close to the
      fixed-n ones.

    ``"equal"`` is the default, chosen by measurement (``benchmarks/bench_sequential.py``,
    CNNIQA-LIVE on the 93 images of ../shared/data at shorter side 96, sigma 0.12,
    eps 0.05, alpha 0.001, n0 64, n_max 1000): for every delta tried (certifying 10 % to
    90 % of the images at fixed n) it used fewer samples than ``"decreasing"`` and changed
    no more decisions. At small n the ranks are coarse, so more alpha early rarely moves
    a rank (n = 64 reads ranks 9 and 56 under both), while the smaller alpha left for
    n_max widens the interval that settles the borderline images.
    """
    looks = check_int("looks", looks)
    alpha = check_open_unit("alpha", alpha)
    if spending == "equal":
        return (alpha / looks,) * looks
    if spending == "decreasing":
        return tuple(alpha / 2 ** (j + 1) for j in range(looks - 1)) + (alpha / 2 ** (looks - 1),)
    if spending == "final":
        if looks == 1:
            return (alpha,)
        return (alpha * (1 - FINAL_SHARE) / (looks - 1),) * (looks - 1) + (alpha * FINAL_SHARE,)
    raise ValueError(f"spending must be one of {SPENDING}, got {spending!r}.")


@dataclass(frozen=True)
class Look:
    """One look of a sequential certification: n samples, its alpha, and its ranks.

    ``alpha == alpha_certificate + alpha_futility``. The certificate ranks are
    ``bound_ranks(n, sigma, eps, alpha_certificate)``. ``futility`` says what the inner
    ranks test: ``"proof"``, the "not certifiable" test, inner ranks
    ``inner_ranks(n, sigma, eps, alpha_futility)``; ``"prediction"``, the "futile" test, inner
    ranks at the :func:`prediction_levels` with error ``futility_error`` and
    ``alpha_futility == 0``; ``"power"``, the "futile" test by :func:`conditional_power` below
    ``futility_error``, against the fixed-n certificate of ``n_final`` samples and ranks
    ``k_final_lower``, ``k_final_upper`` (None where the look has no such test: the last one).
    Both inner ranks are None where the look has no inner-rank test (see :func:`sequential_looks`).
    """

    n: int
    alpha: float
    alpha_certificate: float
    alpha_futility: float
    k_lower: int | None
    k_upper: int | None
    k_inner_lower: int | None
    k_inner_upper: int | None
    futility: str = "proof"
    futility_error: float = 0.0
    n_final: int | None = None
    k_final_lower: int | None = None
    k_final_upper: int | None = None

    @property
    def has_futility_test(self) -> bool:
        if self.futility == "power":
            return self.n_final is not None
        return self.k_inner_lower is not None and self.k_inner_upper is not None


def single_look(n: int, sigma: float, eps: float, alpha: float) -> Look:
    """The fixed-n certificate as one look: all of alpha on the certificate, no futility test.

    :func:`look_decisions` with it says "certified" exactly where the fixed-n interval
    of :func:`bound_ranks` lies within [median - delta, median + delta]."""
    k_lower, k_upper = bound_ranks(n, sigma, eps, alpha)
    return Look(int(n), float(alpha), float(alpha), 0.0, k_lower, k_upper, None, None)


def sequential_looks(
    n0: int,
    n_max: int,
    sigma: float,
    eps: float,
    alpha: float,
    spending: str = DEFAULT_SCHEME.spending,
    futility: str = DEFAULT_SCHEME.futility,
    futility_error: float = DEFAULT_SCHEME.futility_error,
    growth: float = DEFAULT_SCHEME.growth,
) -> tuple[Look, ...]:
    """The looks of a sequential certification of h_0.5 within radius eps, all fixed in advance.

    Look j has n_j = :func:`look_sizes` (n0, n_max, growth)[j] samples and alpha_j =
    :func:`look_alphas` (J + 1, alpha, spending)[j]. Where the inner ranks at
    ``FUTILITY_SHARE * alpha_j`` are ordered (k_inner_lower < k_inner_upper, so the
    "not certifiable" test can fire), that share goes to the test and the rest to the
    certificate; elsewhere the test is off and the certificate gets all of alpha_j.
    The split depends on (n_j, sigma, eps, alpha) only, never on samples.

    Guarantee (union bound; optional stopping): let y_(1)^(j) <= ... <= y_(n_j)^(j) be
    the first n_j samples of one image's i.i.d. stream, sorted. With probability
    >= 1 - sum_j alpha_j >= 1 - alpha, *simultaneously for every look j*:

        y^(j)_(k_lower) <= h_{p_lower}(x),   h_{p_upper}(x) <= y^(j)_(k_upper),
        and, where the test is on,  y^(j)_(k_inner_upper) - y^(j)_(k_inner_lower) <= h_{p_upper}(x) - h_{p_lower}(x).

    So, for a procedure that stops at a look T chosen by any rule (ours, or one that
    stops where the interval looks best), with probability >= 1 - alpha: for every
    ||d||_2 <= eps, ``y^(T)_(k_lower) <= h_0.5(x + d) <= y^(T)_(k_upper)``, and a
    "not certifiable" answer is true (h_{p_upper} - h_{p_lower} > 2 delta, which no
    number of samples can certify). Samples drawn for other images, or the looks never
    reached, do not matter: each fresh noise draw is independent of everything before.

    ``futility="prediction"`` replaces the "not certifiable" test by a cheaper "futile" one,
    which predicts rather than proves: with ``(a, b) = prediction_levels(n_max, sigma, eps,
    alpha, futility_error / 2)``, look j tests ``y^(j)_(k_inner_upper) - y^(j)_(k_inner_lower) >
    2 delta`` with the inner ranks of the levels a, b at error ``futility_error / (2 (J + 1))``
    (:func:`inner_ranks` with a, b for p_lower, p_upper). It spends none of alpha: every
    look's certificate gets all of alpha_j, and the guarantee above holds as stated for the
    certificates. What it gives instead, per image: the probability that the procedure
    answers "futile" at some look while the fixed-n certificate (:func:`bound_ranks` at
    n_max and the whole alpha) on the first n_max samples of the same stream would certify
    within +-delta is at most ``futility_error``. Proof sketch: outside two events, some
    look's inner statement failing (probability <= futility_error / 2, union bound) and the
    fixed-n ranks falling inside [h_a, h_b] (<= futility_error / 2, :func:`prediction_levels`),
    "futile" means h_b - h_a > 2 delta, so the fixed-n interval is wider than 2 delta and
    certifies nothing. The levels a, b lie outside [p_lower, p_upper] by the little that
    n_max samples pay at alpha, and the error is a prediction error rather than a
    certificate's, so the test fires on images far closer to delta than the "not
    certifiable" test, which must hold with probability 1 - alpha_j / 2.

    ``futility="power"`` tests every look but the last with :func:`conditional_power`: "futile"
    where the predictive probability that the fixed-n certificate (n_max samples, the whole
    alpha) would certify is below ``futility_error``. It too spends none of alpha, and the
    certificates' guarantee holds as stated; "futile" is then an estimate with no error bound
    (measured in ``benchmarks/bench_sequential.py``), which fires on images close to delta that
    neither test above can separate.

    Raises ValueError when the first look cannot certify anything (n0 too small for
    its alpha_0), which would only waste alpha.
    """
    check_nonnegative("eps", eps)
    check_positive("sigma", sigma)
    if futility not in FUTILITY:
        raise ValueError(f"futility must be one of {FUTILITY}, got {futility!r}.")
    sizes = look_sizes(n0, n_max, growth)
    alphas = look_alphas(len(sizes), alpha, spending)
    if futility == "prediction":
        check_open_unit("futility_error", futility_error)
        levels = prediction_levels(n_max, sigma, eps, alpha, futility_error / 2.0)
        look_error = futility_error / (2.0 * len(sizes))
    if futility == "power":
        check_open_unit("futility_error", futility_error)
        final_ranks = bound_ranks(n_max, sigma, eps, alpha)
        if final_ranks[0] is None or final_ranks[1] is None:
            raise ValueError(
                f"n_max={n_max} samples certify no interval at eps={eps}, sigma={sigma}, alpha={alpha}: "
                "there is no fixed-n certificate to predict; raise n_max."
            )
    looks = []
    for n, alpha_j in zip(sizes, alphas):
        if futility == "power":
            k_lower, k_upper = bound_ranks(n, sigma, eps, alpha_j)
            final = (n_max, *final_ranks) if n < n_max else (None, None, None)
            looks.append(Look(n, alpha_j, alpha_j, 0.0, k_lower, k_upper, None, None, futility,
                              futility_error if n < n_max else 0.0, *final))
            continue
        if futility == "prediction":
            k_inner_lower, k_inner_upper = _inner_ranks_at(n, *levels, look_error)
            error, alpha_futility = look_error, 0.0
        else:
            k_inner_lower, k_inner_upper = inner_ranks(n, sigma, eps, FUTILITY_SHARE * alpha_j)
            error, alpha_futility = 0.0, FUTILITY_SHARE * alpha_j
        if k_inner_lower is None or k_inner_upper is None or k_inner_lower >= k_inner_upper:
            error, alpha_futility, k_inner_lower, k_inner_upper = 0.0, 0.0, None, None
        alpha_certificate = alpha_j - alpha_futility
        k_lower, k_upper = bound_ranks(n, sigma, eps, alpha_certificate)
        looks.append(Look(n, alpha_j, alpha_certificate, alpha_futility, k_lower, k_upper, k_inner_lower,
                          k_inner_upper, futility, error))
    if looks[0].k_lower is None or looks[0].k_upper is None:
        raise ValueError(
            f"n0={sizes[0]} samples cannot certify eps={eps} at the first look's alpha "
            f"({looks[0].alpha_certificate:.3g} of alpha={alpha} over {len(sizes)} looks); raise n0."
        )
    return tuple(looks)


def certificate_miss_probability(looks: Sequence[Look], sigma: float, eps: float) -> tuple[float, float]:
    """Exact worst-case probability that some look's certificate misses, per side: (lower, upper).

    For looks reading the first n_j samples of one i.i.d. stream (see :func:`sequential_looks`):
    ``lower = P[exists j: y^(j)_(k_lower) > h_{p_lower}(x)]`` and ``upper = P[exists j:
    y^(j)_(k_upper) < h_{p_upper}(x)]``, maximised over score distributions. The union bound
    caps each at ``sum_j alpha_certificate_j / 2``; the difference is what the union and the
    discrete ranks give away. A side a look cannot certify (rank None) never misses there.

    How: the count of the first n samples at or below h_{p_lower} is a walk with Bernoulli(q)
    steps, q >= p_lower, and the lower side misses at look j iff that count is < k_lower. That
    event only grows as q falls, so q = p_lower is the worst case (attained by continuous
    scores); its probability is carried from look to look over the count's distribution
    (dynamic programming). The upper side: the count of samples strictly below h_{p_upper},
    q' <= p_upper, reaching k_upper.
    """
    check_nonnegative("eps", eps)
    check_positive("sigma", sigma)
    p_lower, p_upper = percentile_levels(eps, sigma)
    sizes = [look.n for look in looks]
    if not sizes or any(b <= a for a, b in zip(sizes, sizes[1:])):
        raise ValueError(f"looks must be non-empty with strictly increasing n, got n = {sizes}.")
    lower = _walk_miss(sizes, [look.k_lower for look in looks], p_lower, below=True)
    upper = _walk_miss(sizes, [look.k_upper for look in looks], p_upper, below=False)
    return lower, upper


def _walk_miss(sizes: Sequence[int], ranks: Sequence[int | None], q: float, below: bool) -> float:
    """P[some look j has count < ranks[j] (below) or count >= ranks[j] (not below)] for a
    Bernoulli(q) walk read at the given sizes; the mass that has missed is removed as it goes."""
    counts = np.ones(1)  # distribution of the count after `previous` steps
    previous, missed = 0, 0.0
    for n, k in zip(sizes, ranks):
        counts = np.convolve(counts, binom.pmf(np.arange(n - previous + 1), n - previous, q))
        previous = n
        if k is not None:
            region = slice(0, k) if below else slice(k, n + 1)
            missed += float(counts[region].sum())
            counts[region] = 0.0
    return missed


@dataclass(frozen=True)
class LookOutcome:
    """What one look reads from sorted samples (A, n): per row the decision and the
    certificate ``lower``, the empirical ``median`` y_(ceil(n/2)) and ``upper``
    (-inf / +inf for a side the look cannot certify); arrays of shape (A,)."""

    decision: np.ndarray
    lower: np.ndarray
    median: np.ndarray
    upper: np.ndarray


def look_decisions(sorted_samples: np.ndarray, look: Look, delta: float) -> LookOutcome:
    """Decide every row of ``sorted_samples`` (A, look.n), each row sorted ascending (read as float64).

    - ``"certified"``: ``median - delta <= lower`` and ``upper <= median + delta``, compared
      exactly (:func:`inward_interval`);
    - ``"not certifiable"``: the look's test is on (``futility="proof"``) and
      ``y_(k_inner_upper) - y_(k_inner_lower) > 2 delta`` (a lower confidence bound on
      h_{p_upper} - h_{p_lower}, which every certified interval must contain);
    - ``"futile"``: the same comparison for a ``futility="prediction"`` look (a lower
      confidence bound on h_b - h_a, so the fixed-n certificate would not certify); for a
      ``futility="power"`` look, a :func:`conditional_power` below ``look.futility_error``;
    - ``"undecided"`` otherwise: draw the next look's samples, or stop undecided at n_max.

    A certified row is never reported otherwise. For ``"proof"`` looks the cases exclude
    each other anyway: the inner ranks lie inside the certificate's ranks (both confidences
    exceed 1/2), so a width above 2 delta rules out certification.
    """
    samples = np.asarray(sorted_samples, dtype=np.float64)
    if samples.ndim != 2 or samples.shape[1] != look.n:
        raise ValueError(
            f"sorted_samples must have shape (A, {look.n}) for a look of {look.n} samples, "
            f"got {tuple(samples.shape)}."
        )
    delta = check_nonnegative("delta", delta)
    rows = samples.shape[0]
    lower = samples[:, look.k_lower - 1] if look.k_lower is not None else np.full(rows, -np.inf)
    upper = samples[:, look.k_upper - 1] if look.k_upper is not None else np.full(rows, np.inf)
    median = samples[:, math.ceil(look.n / 2) - 1]
    ends = np.array([inward_interval(float(m), delta) for m in median]).reshape(rows, 2)  # exact, rounded inward
    certified = (lower >= ends[:, 0]) & (upper <= ends[:, 1])
    if look.has_futility_test and look.futility == "power":
        futile = np.zeros(rows, dtype=bool)
        open_rows = ~certified
        if open_rows.any():
            power = conditional_power(samples[open_rows], look.n_final, look.k_final_lower, look.k_final_upper, delta)
            futile[open_rows] = power < look.futility_error
    elif look.has_futility_test:
        futile = samples[:, look.k_inner_upper - 1] - samples[:, look.k_inner_lower - 1] > 2.0 * delta
    else:
        futile = np.zeros(rows, dtype=bool)
    stopped = NOT_CERTIFIABLE if look.futility == "proof" else FUTILE
    decision = np.where(certified, CERTIFIED, np.where(futile, stopped, UNDECIDED))
    return LookOutcome(decision=decision, lower=lower, median=median, upper=upper)


@dataclass(frozen=True)
class SequentialOutcome:
    """The sequential procedure's answer per row: a :class:`LookOutcome` read at the look
    where the row stopped, and ``n_used`` (int64, shape (A,)), that look's sample count."""

    decision: np.ndarray
    lower: np.ndarray
    median: np.ndarray
    upper: np.ndarray
    n_used: np.ndarray


def run_sequential(
    draw: Callable[[np.ndarray, int, int], np.ndarray], streams: int, looks: Sequence[Look], delta: float
) -> SequentialOutcome:
    """The sequential procedure over ``streams`` i.i.d. sample streams (one per image).

    ``draw(active, start, stop)`` returns, for the streams numbered in ``active``
    (increasing), their samples ``start .. stop - 1`` in draw order, shape
    (len(active), stop - start). Look j asks each stream still open for its samples
    n_{j-1} .. n_j - 1 (earlier ones are kept), decides it with :func:`look_decisions`
    on all n_j of them, and closes it unless "undecided"; the last look closes all.
    Guarantee: that of :func:`sequential_looks`, per stream.
    """
    streams = check_int("streams", streams)
    delta = check_nonnegative("delta", delta)
    out = SequentialOutcome(
        decision=np.full(streams, UNDECIDED, dtype=object),
        lower=np.zeros(streams),
        median=np.zeros(streams),
        upper=np.zeros(streams),
        n_used=np.zeros(streams, dtype=np.int64),
    )
    active = np.arange(streams)
    samples = np.empty((streams, 0))  # the open streams' samples so far, rows sorted
    previous = 0
    for j, look in enumerate(looks):
        fresh = np.asarray(draw(active, previous, look.n), dtype=np.float64)
        if fresh.shape != (active.size, look.n - previous):
            raise ValueError(
                f"draw must return shape {(active.size, look.n - previous)} for {active.size} open streams "
                f"and samples {previous}..{look.n - 1}, got {fresh.shape}."
            )
        samples = np.sort(np.concatenate([samples, fresh], axis=1), axis=1)
        outcome = look_decisions(samples, look, delta)
        done = (outcome.decision != UNDECIDED) | (j == len(looks) - 1)
        stopped = active[done]
        for name in ("decision", "lower", "median", "upper"):
            getattr(out, name)[stopped] = getattr(outcome, name)[done]
        out.n_used[stopped] = look.n
        active, samples = active[~done], samples[~done]
        if active.size == 0:
            break
        previous = look.n
    return out


def sequential_decisions(draws: np.ndarray, looks: Sequence[Look], delta: float) -> SequentialOutcome:
    """:func:`run_sequential` on samples drawn in advance, rows (A, m) in draw order, m >= n_max.

    Row i stops at the first look j whose decision on its first n_j draws is not
    "undecided", or at the last look. This is what
    :meth:`certiqa.SmoothedIQA.certify_sequential` reports when its stream draws these
    values, with the same guarantee (:func:`sequential_looks`).
    """
    draws = np.asarray(draws, dtype=np.float64)
    if draws.ndim != 2 or draws.shape[1] < looks[-1].n:
        raise ValueError(
            f"draws must have shape (A, m) with m >= {looks[-1].n} (the last look), got {tuple(draws.shape)}."
        )
    return run_sequential(lambda active, start, stop: draws[active, start:stop], draws.shape[0], looks, delta)
