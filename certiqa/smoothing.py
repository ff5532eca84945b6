"""Median randomized smoothing of NR-IQA models with certified score intervals.

The smoothed model of a base model f (optionally preceded by a denoiser D) is

    g(x) = median of f(D(clip(x + G))),  G ~ N(0, sigma^2 I),

estimated from n Gaussian samples. Its certificates come from :mod:`certiqa.bounds`;
this module only draws samples and reads the order statistics.

Everything between the noisy image and the score is part of f: clipping, the denoiser
and the model's own preprocessing (resizing, cropping to a fixed size). The noise is
added to the image as given, at its resolution, so the certificate is about that image.

A model with its own randomness (random crops, dropout left on) is smoothed over the
noise and its randomness together: g(x) is the median of f(D(clip(x + G)), R) over G and
R. The certificates hold for that g whenever the law of R does not depend on the input
(the bound only uses that the score's distribution at x + d is that of the noise shifted
by d); with a seed, R is drawn from generators seeded per model call from the noise seed
(:func:`model_rng`), so results stay a deterministic function of the input.
"""

from __future__ import annotations

import contextlib
import math
import random
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from . import bounds
from .denoisers import DenoiserMismatchWarning, denoiser_mismatch
from .memory import free_bytes, is_out_of_memory, peak_bytes
from .noise import GaussianStreams
from ._checks import (
    check_images,
    check_int,
    check_nonnegative,
    check_open_unit,
    check_positive,
    check_scores,
)

__all__ = [
    "SmoothedIQA", "CertifiedScores", "SequentialCertificate", "certify_samples", "certified_radius_samples",
    "check_samples", "model_rng", "MEMORY_FRACTION", "PRECISIONS",
]

MEMORY_FRACTION = 0.8  # share of the device's free memory the model calls may take without max_memory_bytes
_MODEL_RNG_WORD = 0x6D6F64  # tags the model's generators apart from the noise streams of the same seed

ScoreModel = Callable[[torch.Tensor], torch.Tensor]

# The arithmetic the model and the denoiser run in: fp32 as given, or torch.autocast to a reduced dtype.
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class CertifiedScores:
    """Certified score intervals for a batch of B images.

    ``lower``, ``median`` and ``upper`` have shape (B,); ``certified`` is True where
    both bounds are finite. With probability >= 1 - alpha over the noise, for every
    ||delta||_2 <= eps: ``lower[i] <= g(x_i + delta) <= upper[i]``, g the smoothed
    median of the population (not of these n samples).
    """

    lower: torch.Tensor
    median: torch.Tensor
    upper: torch.Tensor
    certified: torch.Tensor
    eps: float
    sigma: float
    n: int
    alpha: float

    @property
    def width(self) -> torch.Tensor:
        """upper - lower, shape (B,); +inf where not certified."""
        return self.upper - self.lower

    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per image: median, lower, upper, width, certified and the settings."""
        rows = []
        for i in range(self.median.shape[0]):
            rows.append(
                {
                    "median": float(self.median[i]),
                    "lower": float(self.lower[i]),
                    "upper": float(self.upper[i]),
                    "width": float(self.width[i]),
                    "certified": bool(self.certified[i]),
                    "eps": self.eps,
                    "sigma": self.sigma,
                    "n": self.n,
                    "alpha": self.alpha,
                }
            )
        return rows


@dataclass(frozen=True)
class SequentialCertificate:
    """Result of :meth:`SmoothedIQA.certify_sequential` for a batch of B images.

    ``decision`` holds one of ``"certified"``, ``"not certifiable"``, ``"futile"``,
    ``"undecided"`` per image (:data:`certiqa.bounds.DECISIONS`); ``lower``, ``median``, ``upper``
    (float64, shape (B,), on the CPU) are read at the look where the image stopped,
    from its ``n_used`` samples (int64, shape (B,)). With probability >= 1 - alpha over the noise, for
    every ||d||_2 <= eps, ``lower[i] <= h_0.5(x_i + d) <= upper[i]``, and a "not
    certifiable" image has h_{p_upper} - h_{p_lower} > 2 delta (see
    :func:`certiqa.bounds.sequential_looks`). "futile" is a prediction that the fixed-n
    certificate at n_max would not have certified the image either: with
    ``futility="prediction"`` wrong with probability <= ``futility_error``; with
    ``futility="power"`` an estimate (predictive probability of certifying below
    ``futility_error``) with no error bound. "undecided" means n_max samples settled
    nothing; it is never a certificate.
    """

    decision: tuple[str, ...]
    lower: torch.Tensor
    median: torch.Tensor
    upper: torch.Tensor
    n_used: torch.Tensor
    eps: float
    delta: float
    sigma: float
    alpha: float
    n0: int
    n_max: int
    spending: str
    futility: str = "proof"
    futility_error: float = 0.0
    growth: float = bounds.DEFAULT_SCHEME.growth

    @property
    def futility_setting(self) -> str:
        """``"proof"``, ``"prediction E"`` or ``"power E"`` (E the futility error): the ``futility`` column."""
        return bounds.futility_setting(self.futility, self.futility_error)

    @property
    def certified(self) -> torch.Tensor:
        """Bool (B,): True where the decision is "certified"."""
        return torch.tensor([d == bounds.CERTIFIED for d in self.decision], dtype=torch.bool)

    @property
    def width(self) -> torch.Tensor:
        """upper - lower, shape (B,); +inf where a side is not certified."""
        return self.upper - self.lower

    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per image: decision, n_used, median, lower, upper, width, certified and the settings."""
        return [
            {
                "decision": self.decision[i],
                "n_used": int(self.n_used[i]),
                "median": float(self.median[i]),
                "lower": float(self.lower[i]),
                "upper": float(self.upper[i]),
                "width": float(self.width[i]),
                "certified": self.decision[i] == bounds.CERTIFIED,
                "eps": self.eps,
                "delta": self.delta,
                "sigma": self.sigma,
                "n": self.n_max,
                "n0": self.n0,
                "growth": self.growth,
                "spending": self.spending,
                "futility": self.futility_setting,
                "alpha": self.alpha,
            }
            for i in range(len(self.decision))
        ]


def _device_of(module: Any, fallback: torch.device) -> torch.device:
    if isinstance(module, nn.Module):
        for tensor in module.parameters():
            return tensor.device
        for tensor in module.buffers():
            return tensor.device
    return fallback


def _entropy(seed: int | Sequence[int]) -> list[int]:
    return list(seed) if isinstance(seed, (list, tuple)) else [int(seed)]


@contextlib.contextmanager
def model_rng(seed: int | Sequence[int] | None, index: int, device: torch.device) -> Iterator[None]:
    """Seed the global generators a model may draw from for one call, and restore them after.

    Inside, torch's CPU generator (and ``device``'s when it is CUDA), Python's ``random``
    and NumPy's global generator are seeded from ``SeedSequence([*seed, TAG, index + 1])``:
    ``seed`` is the noise seed of the call (an int or a sequence of ints, e.g.
    :func:`certiqa.runner.image_noise_seed`) and ``index`` the position of the call's first
    noisy image in the image's stream (0, batch, 2 batch, ...), -1 for the call on the
    clean image (the runner's ``clean`` column). Without a seed nothing
    is seeded (fresh randomness), and nothing is restored either.
    """
    if seed is None:
        yield
        return
    words = np.random.SeedSequence(_entropy(seed) + [_MODEL_RNG_WORD, index + 1]).generate_state(2, np.uint32)
    state = int(words[0]) << 32 | int(words[1])
    saved = random.getstate(), np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(state)
            random.seed(state)
            np.random.seed(int(words[0]))
            yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])


@contextlib.contextmanager
def _eval_mode(*modules: Any) -> Iterator[None]:
    """Put every nn.Module (and its children) in eval mode, restore each flag after."""
    saved = [
        (m, m.training) for module in modules if isinstance(module, nn.Module) for m in module.modules()
    ]
    try:
        for m, _ in saved:
            m.training = False
        yield
    finally:
        for m, flag in saved:
            m.training = flag


class SmoothedIQA:
    """Median smoothing of an NR-IQA model with certified score intervals.

    Args:
        model: ``nn.Module`` or callable mapping images (B, C, H, W) in [0, 1] to
            scores of shape (B,) or (B, 1).
        sigma: standard deviation of the Gaussian noise, in [0, 1] pixel units.
        n: number of noise samples per image.
        alpha: failure probability of each certificate.
        batch_size: noisy images per forward pass; bounds memory whatever n is.
        clip: clamp noisy images to [0, 1] before the model (part of the smoothed
            function, so certificates are unaffected).
        denoiser: optional ``nn.Module`` or callable applied to each noisy image
            before the model; also part of the smoothed function. A denoiser file
            whose recorded sigma or ``base_model`` does not match ``sigma`` or the
            model's ``spec`` gives a :class:`certiqa.denoisers.DenoiserMismatchWarning`.
        seed: with a seed, every call draws the same noise, so results are a
            deterministic function of the input for a given device and batch_size
            (whatever the number of threads); without one, fresh noise is drawn on
            every call.
        precision: ``"fp32"`` (the model as given), ``"bf16"`` or ``"fp16"``: model and
            denoiser run under ``torch.autocast`` to that dtype (:meth:`autocast`). The
            certificates are then those of the smoothed function of the model *as computed
            under autocast*, z -> f_amp(D_amp(clip(z))): exact for that function, since its
            scores are copied into float64 without rounding; they state nothing about the
            fp32 model's smoothed function. Autocast lowers float32 operations only:
            float64 images or models run in float64 whatever this says.
        randomized: whether the model has randomness of its own (default: its
            ``randomized`` attribute, which :func:`certiqa.models.load_model` sets by
            probing it twice). With a seed, each model call then runs under
            :func:`model_rng`, so the model's random draws repeat too (for the same
            batch_size and model batch); see the module docstring for what is certified.
        max_memory_bytes: memory budget of one model call (denoiser included), beyond
            the noise buffer; default: ``MEMORY_FRACTION`` of the device's free memory.

    Noise is drawn on the model's device (that of its first parameter; the input's
    device for parameter-free callables) by :class:`certiqa.noise.GaussianStreams`
    into one reused buffer of ``batch_size`` images. Model and denoiser run in eval
    mode under ``torch.inference_mode`` and their modes are restored afterwards.

    Memory: the peak memory of the first model call of each ``sample`` /
    ``certify_sequential`` call is measured (:func:`certiqa.memory.peak_bytes`), and the
    next calls take the largest batch (at most ``batch_size``) whose estimated peak (the
    peak per image of that call times the batch) fits the budget. With
    ``max_memory_bytes`` that first call scores one noisy image, so the budget holds
    throughout; without it, the first call takes ``batch_size`` images. A call that runs
    out of memory is retried on halves of the same noisy images, down to one. The noise is
    drawn in fills of ``batch_size`` images whatever the model batch, so the draws, and
    the scores of a model whose score of an image does not depend on the rest of its
    batch, do not change; nothing is redrawn or lost. The denoiser and the model must
    not write into their input (a retry reuses it).
    """

    def __init__(
        self,
        model: nn.Module | ScoreModel,
        sigma: float,
        *,
        n: int = 1000,
        alpha: float = 0.001,
        batch_size: int = 32,
        clip: bool = True,
        denoiser: nn.Module | ScoreModel | None = None,
        seed: int | None = None,
        precision: str = "fp32",
        randomized: bool | None = None,
        max_memory_bytes: int | None = None,
    ) -> None:
        if not callable(model):
            raise TypeError(f"model must be an nn.Module or a callable, got {type(model).__name__}.")
        if denoiser is not None and not callable(denoiser):
            raise TypeError(f"denoiser must be an nn.Module, a callable or None, got {type(denoiser).__name__}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {seed!r}.")
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be >= 0 (it seeds numpy's SeedSequence), got {seed}.")
        self.model = model
        self.denoiser = denoiser
        self.sigma = check_positive("sigma", sigma)
        if (mismatch := denoiser_mismatch(denoiser, self.sigma, getattr(model, "spec", None))) is not None:
            warnings.warn(mismatch, DenoiserMismatchWarning, stacklevel=2)
        self.n = check_int("n (the number of noise samples)", n)
        self.alpha = check_open_unit("alpha", alpha)
        self.batch_size = check_int("batch_size", batch_size)
        self.clip = bool(clip)
        self.seed = seed
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}; fp32 runs the "
                             "model as given, bf16 and fp16 under torch.autocast.")
        self.precision = precision
        self.randomized = bool(getattr(model, "randomized", False) if randomized is None else randomized)
        self.max_memory_bytes = None if max_memory_bytes is None else check_int("max_memory_bytes", max_memory_bytes)

    def __repr__(self) -> str:
        return (
            f"SmoothedIQA(model={type(self.model).__name__}, sigma={self.sigma}, n={self.n}, "
            f"alpha={self.alpha}, batch_size={self.batch_size}, clip={self.clip}, "
            f"denoiser={type(self.denoiser).__name__ if self.denoiser is not None else None}, seed={self.seed}, "
            f"precision={self.precision!r}, randomized={self.randomized}, max_memory_bytes={self.max_memory_bytes})"
        )

    def device_for(self, x: torch.Tensor) -> torch.device:
        """Where noise is drawn and the model runs for input ``x``."""
        return _device_of(self.model, x.device)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """The context model and denoiser run in on ``device``: ``torch.autocast`` to the
        dtype of ``precision``, or nothing for fp32."""
        dtype = PRECISIONS[self.precision]
        return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)

    def noisy(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The smoothed function's input path: ``D(clip(x + sigma * noise))``, differentiable
        (the denoiser under :meth:`autocast`)."""
        z = x + self.sigma * noise
        if self.clip:
            z = z.clamp(0.0, 1.0)
        if self.denoiser is None:
            return z
        with self.autocast(z.device):
            return self.denoiser(z)

    def base_scores(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """f(D(clip(x + sigma * noise))) of shape (B,), differentiable (for adaptive attacks),
        computed as the smoothed function computes it (under :meth:`autocast`)."""
        z = self.noisy(x, noise)
        with self.autocast(z.device):
            return check_scores(self.model(z), x.shape[0])

    def sample(self, x: torch.Tensor, n: int | None = None, *, seed: int | Sequence[int] | None = None) -> torch.Tensor:
        """Sorted scores of the base model on noisy copies of ``x``.

        Args:
            x: images (B, C, H, W) in [0, 1].
            n: samples per image (default ``self.n``).
            seed: the noise seed of this call only, an int >= 0 or a sequence of them
                (:class:`certiqa.noise.GaussianStreams`); default ``self.seed``.

        Returns:
            (B, n) float64 tensor on the model's device, each row sorted ascending:
            y_(1) <= ... <= y_(n). float64 holds every score of a float16, bfloat16,
            float32 or integer model exactly, so the bounds read from it are exact.

        Noise is drawn in the input's dtype, or in float32 for float16 / bfloat16
        input (noise drawn in half precision would not be Gaussian). The noisy image
        clip(x + G) is then cast to the input's dtype before the denoiser and the
        model: that rounding is part of the smoothed function, so the certificates
        are those of z -> f(D(cast(clip(z))))), exactly. With a reduced ``precision``,
        f and D are the functions computed under :meth:`autocast`.
        """
        check_images(x)
        n = self.n if n is None else check_int("n (the number of noise samples)", n)
        x = x.to(self.device_for(x))
        with self._sampler(x, x.shape[0] * n, seed) as draw:
            samples = draw(x, n)
        return samples.sort(dim=1).values

    @contextlib.contextmanager
    def _sampler(
        self, x: torch.Tensor, rows: int, seed: int | Sequence[int] | None = None
    ) -> Iterator[Callable[..., torch.Tensor]]:
        """One noise stream and one reused buffer for images shaped like ``x`` (on its device).

        Yields ``draw(images, n, index=None)``: the unsorted scores (A, n) of n fresh noisy
        copies of each of the A images, in draw order; successive draws continue the same
        stream, so they are independent. ``rows`` is the most noisy images one draw needs
        (the buffer holds min(batch_size, rows)); ``index`` names the images' original
        positions in error messages. Model and denoiser run in eval mode, under inference mode
        and :meth:`autocast`.
        ``seed`` overrides ``self.seed`` for this stream. The buffer is float32 for float16 /
        bfloat16 images (see :meth:`sample`), else of the images' dtype.
        """
        device = x.device
        seed = self.seed if seed is None else seed
        noise_dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
        with torch.inference_mode(), _eval_mode(self.model, self.denoiser), GaussianStreams(seed, device) as noise:
            buffer = torch.empty((min(self.batch_size, rows),) + tuple(x.shape[1:]), device=device, dtype=noise_dtype)
            # a budget given: the first call scores one image; else a whole buffer. Its peak sets the batch.
            # "cap": the largest batch not known to run out of memory
            state = {"drawn": 0, "batch": 1 if self.max_memory_bytes is not None else len(buffer),
                     "cap": len(buffer), "measured": 0}

            def draw(images: torch.Tensor, n: int, index: list[int] | None = None) -> torch.Tensor:
                return self._draw(images, n, noise, buffer, index, state, seed)

            yield draw

    def _score(self, z: torch.Tensor) -> torch.Tensor:
        """f(D(z)) for noisy images z (B, C, H, W) of the input's dtype, under :meth:`autocast`."""
        with self.autocast(z.device):
            return self.model(self.denoiser(z) if self.denoiser is not None else z)

    def _budget(self, device: torch.device) -> int | None:
        """Bytes one model call may take: ``max_memory_bytes``, else ``MEMORY_FRACTION`` of the
        device's free memory (None when unknown)."""
        if self.max_memory_bytes is not None:
            return self.max_memory_bytes
        free = free_bytes(device)
        return None if free is None else int(free * MEMORY_FRACTION)

    def _draw(
        self, x: torch.Tensor, n: int, noise: GaussianStreams, buffer: torch.Tensor, index: list[int] | None,
        state: dict[str, int], seed: int | Sequence[int] | None,
    ) -> torch.Tensor:
        """Unsorted scores (B, n) of n noisy copies of each image of ``x``: noise drawn in fills
        of len(buffer) images, scored in model batches of ``state["batch"]`` images, halved (and
        kept halved: ``state["cap"]``) on out-of-memory; ``state["drawn"]`` counts the noisy
        images of the stream."""
        batch = x.shape[0]
        total = batch * n
        samples = torch.empty(total, dtype=torch.float64, device=x.device)
        for start in range(0, total, len(buffer)):
            stop = min(start + len(buffer), total)
            z = noise.normal_(buffer[: stop - start], self.sigma)  # reused: no allocation per chunk
            for image in range(start // n, (stop - 1) // n + 1):  # images overlapping this chunk
                lo, hi = max(image * n, start) - start, min((image + 1) * n, stop) - start
                z[lo:hi].add_(x[image])
            if self.clip:
                z.clamp_(0.0, 1.0)
            z = z.to(x.dtype)  # no copy unless the noise was drawn in float32 for half input
            at = 0
            while at < len(z):
                end = min(at + state["batch"], len(z))
                try:
                    with model_rng(seed if self.randomized else None, state["drawn"] + at, x.device):
                        if state["measured"]:
                            scores = self._score(z[at:end])
                        else:  # the first call that succeeds: its peak memory sets the model batch
                            out: list[torch.Tensor] = []
                            peak = peak_bytes(lambda: out.append(self._score(z[at:end])), x.device)
                            scores = out[0]
                            budget = self._budget(x.device)
                            fits = len(buffer) if not peak or budget is None else budget * (end - at) // peak
                            state["batch"], state["measured"] = max(1, min(state["cap"], fits)), 1
                except Exception as err:  # halve the model batch on out-of-memory, else re-raise
                    if not is_out_of_memory(err) or end - at <= 1:
                        raise
                    if x.device.type == "cuda":
                        torch.cuda.empty_cache()
                    state["batch"] = state["cap"] = (end - at) // 2
                    continue
                # a copy into float64: exact for any float or integer score, and safe when the
                # model returns a view of the reused buffer
                samples[start + at:start + end] = check_scores(scores, end - at, finite=False)
                at = end
            state["drawn"] += len(z)
        samples = samples.reshape(batch, n)
        finite = torch.isfinite(samples)
        if not finite.all():  # one check for the whole run: no host sync per chunk
            image, sample = (~finite).nonzero()[0].tolist()
            raise ValueError(
                f"the model returned a non-finite score ({float(samples[image, sample])}) for image index "
                f"{image if index is None else index[image]} (noise sample {sample}); check the model and that image"
                + (" (fp16 overflows above 65504: try precision bf16)." if self.precision == "fp16" else ".")
            )
        return samples

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Smoothed median score, shape (B,): y_(ceil(n/2)) of the n noisy scores."""
        return _median(self.sample(x))

    __call__ = predict

    def certify(self, x: torch.Tensor, eps: float) -> CertifiedScores:
        """Certified score intervals for every l2 perturbation of norm <= eps.

        With probability >= 1 - alpha over the noise, for every ||delta||_2 <= eps,
        ``lower <= h_0.5(x + delta) <= upper``, where h_0.5 is the population median
        of the smoothed model (:func:`certiqa.bounds.bound_ranks`). A side that n
        cannot certify at this alpha is -inf / +inf and ``certified`` is False.
        """
        eps = check_nonnegative("eps", eps)
        return certify_samples(self.sample(x), eps, self.sigma, self.alpha)

    def certify_sequential(
        self,
        x: torch.Tensor,
        eps: float,
        delta: float,
        *,
        n0: int = bounds.DEFAULT_SCHEME.n0,
        n_max: int | None = None,
        spending: str = bounds.DEFAULT_SCHEME.spending,
        futility: str = bounds.DEFAULT_SCHEME.futility,
        futility_error: float = bounds.DEFAULT_SCHEME.futility_error,
        growth: float = bounds.DEFAULT_SCHEME.growth,
        seed: int | Sequence[int] | None = None,
    ) -> SequentialCertificate:
        """Certify each image with as few samples as its decision needs (group-sequential).

        Decides, per image, whether the smoothed score stays within ``delta`` of the
        reported median for every ||d||_2 <= eps. Looks at n0, g n0, g^2 n0, ... samples
        (``growth`` g: the distinct ceil(n0 g^j)), then n_max (default ``self.n``); at each
        look an image is "certified" when its interval lies within [median - delta,
        median + delta], "not certifiable" when a lower confidence bound on
        h_{p_upper} - h_{p_lower} exceeds 2 delta, and goes on otherwise; still open at
        n_max it is "undecided". The looks, their alpha (summing to ``self.alpha``, spread
        by ``spending``) and ranks are :func:`certiqa.bounds.sequential_looks`; the
        decisions :func:`certiqa.bounds.look_decisions`.
        ``futility="prediction"`` replaces "not certifiable" by "futile": stop when the
        fixed-n certificate at n_max would not certify either, wrong with probability
        <= ``futility_error`` per image; it spends none of alpha and stops far more images early.
        ``futility="power"`` stops an image as "futile" when the predictive probability that
        n_max samples would certify it (:func:`certiqa.bounds.conditional_power`) falls below
        ``futility_error``: no error bound, but it stops images close to delta that the
        other tests cannot. The defaults (:data:`certiqa.bounds.DEFAULT_SCHEME`: n0 32,
        growth 1.25, final spending, power futility 0.05) are the measured fastest scheme
        with at most 5 % of decisions differing from fixed n; ``futility="proof"`` is the one
        whose every stop carries the alpha guarantee.

        Guarantee (per image): with probability >= 1 - alpha over the noise, the
        statements of every look hold at once, so the reported ``lower <= h_0.5(x + d)
        <= upper`` for every ||d||_2 <= eps, and "not certifiable" is true, whichever
        look the image stopped at. With ``futility="prediction"`` or ``"power"`` the
        certificates keep this guarantee; for "prediction", P["futile" while the fixed-n
        certificate on the first n_max samples of the same stream would certify] <=
        futility_error.

        Images still open continue together (:func:`certiqa.bounds.run_sequential`): each
        look draws only their extra samples (the earlier ones are kept), from one noise
        stream into one reused buffer on the model's device; only the scores go to the
        host. With a seed, results are a deterministic function of the input; ``seed``
        overrides ``self.seed`` for this call, as in :meth:`sample`.
        """
        eps = check_nonnegative("eps", eps)
        delta = check_nonnegative("delta", delta)
        n_max = self.n if n_max is None else n_max
        looks = bounds.sequential_looks(n0, n_max, self.sigma, eps, self.alpha, spending, futility, futility_error,
                                        growth)
        check_images(x)
        x = x.to(self.device_for(x))
        sizes = [0] + [look.n for look in looks]
        with self._sampler(x, x.shape[0] * max(b - a for a, b in zip(sizes, sizes[1:])), seed) as draw:

            def more(active: np.ndarray, start: int, stop: int) -> np.ndarray:
                images = x[torch.from_numpy(active).to(x.device)]
                return draw(images, stop - start, active.tolist()).cpu().to(torch.float64).numpy()

            outcome = bounds.run_sequential(more, x.shape[0], looks, delta)
        return SequentialCertificate(
            decision=tuple(str(d) for d in outcome.decision),
            lower=torch.from_numpy(outcome.lower),
            median=torch.from_numpy(outcome.median),
            upper=torch.from_numpy(outcome.upper),
            n_used=torch.from_numpy(outcome.n_used),
            eps=eps,
            delta=delta,
            sigma=self.sigma,
            alpha=self.alpha,
            n0=looks[0].n,
            n_max=looks[-1].n,
            spending=spending,
            futility=futility,
            futility_error=futility_error if futility != "proof" else 0.0,
            growth=float(growth),
        )

    def certified_radius(self, x: torch.Tensor, delta: float) -> torch.Tensor:
        """Per image, the largest eps whose bounds stay within ``delta`` of the median.

        Uses the DKW band, which holds for all eps simultaneously: with probability
        >= 1 - alpha, for every eps < radius[i] and every ||d||_2 <= eps, the smoothed
        median of x_i + d is within ``delta`` of the reported median. Shape (B,),
        float64; 0 where not even eps = 0 can be certified. See
        :func:`certified_radius_samples`.
        """
        delta = check_nonnegative("delta", delta)
        return certified_radius_samples(self.sample(x), delta, self.sigma, self.alpha)


def check_samples(samples: Any) -> torch.Tensor:
    """Check sorted score samples (B, n): a tensor, rows ascending, no NaN or inf.

    Returns them as float64 (exact for every float and integer score dtype). Costs
    one comparison per sample; an unsorted row or a NaN would otherwise yield a
    wrong certificate silently.
    """
    if not isinstance(samples, torch.Tensor):
        raise TypeError(
            f"samples must be a torch.Tensor of shape (B, n), got {type(samples).__name__}; "
            "use SmoothedIQA.sample(x), which returns sorted rows."
        )
    if samples.ndim != 2 or samples.shape[0] < 1 or samples.shape[1] < 1:
        raise ValueError(f"samples must have shape (B, n) with B, n >= 1, got {tuple(samples.shape)}.")
    if samples.is_complex() or samples.dtype == torch.bool:
        raise TypeError(f"samples must be real scores (float or integer), got dtype {samples.dtype}.")
    samples = samples.to(torch.float64)
    finite = torch.isfinite(samples)
    if not finite.all():
        row, col = (~finite).nonzero()[0].tolist()
        raise ValueError(
            f"samples must be finite; row {row} has {float(samples[row, col])} at position {col}. "
            "A model that returns NaN or inf for a noisy image cannot be certified."
        )
    descending = samples[:, 1:] < samples[:, :-1]
    if descending.any():
        row, col = descending.nonzero()[0].tolist()
        raise ValueError(
            f"samples must be sorted ascending along dim 1; row {row} has {float(samples[row, col])} before "
            f"{float(samples[row, col + 1])} (positions {col}, {col + 1}). Sort them with samples.sort(dim=1).values."
        )
    return samples


def certify_samples(samples: torch.Tensor, eps: float, sigma: float, alpha: float) -> CertifiedScores:
    """Certified intervals read from sorted samples (B, n) of f(x + G) drawn at ``sigma``.

    Same guarantee as :meth:`SmoothedIQA.certify`: ``lower = y_(k_lower)`` and
    ``upper = y_(k_upper)`` with the 1-based ranks of :func:`certiqa.bounds.bound_ranks`.
    One sample set can be certified at several eps (each certificate holds with
    probability >= 1 - alpha on its own). Samples are checked (:func:`check_samples`)
    and the bounds returned as float64.
    """
    samples = check_samples(samples)
    eps = check_nonnegative("eps", eps)
    n = samples.shape[1]
    k_lower, k_upper = bounds.bound_ranks(n, sigma, eps, alpha)
    inf = torch.full((samples.shape[0],), math.inf, dtype=samples.dtype, device=samples.device)
    lower = samples[:, k_lower - 1] if k_lower is not None else -inf
    upper = samples[:, k_upper - 1] if k_upper is not None else inf
    return CertifiedScores(
        lower=lower,
        median=_median(samples),
        upper=upper,
        certified=torch.isfinite(lower) & torch.isfinite(upper),
        eps=float(eps),
        sigma=float(sigma),
        n=n,
        alpha=float(alpha),
    )


def certified_radius_samples(samples: torch.Tensor, delta: float, sigma: float, alpha: float) -> torch.Tensor:
    """Per row of sorted samples (B, n) drawn at ``sigma``: the largest certified eps for ``delta``.

    With m = y_(ceil(n/2)) the reported median, k_min is the rank of the smallest
    sample >= m - delta and k_max that of the largest sample <= m + delta (exact
    comparisons: :func:`certiqa.bounds.inward_interval`); the radius is
    :func:`certiqa.bounds.dkw_radius` (n, k_min, k_max). Guarantee: with probability
    >= 1 - alpha (one DKW event for all radii), for every eps < radius[i] and every
    ||d||_2 <= eps, |h_0.5(x_i + d) - m_i| <= delta. Returns float64, shape (B,).
    """
    samples = check_samples(samples)
    delta = check_nonnegative("delta", delta)
    n = samples.shape[1]
    medians = _median(samples).tolist()
    ends = [bounds.inward_interval(m, delta) for m in medians]
    lo = torch.tensor([e[0] for e in ends], dtype=torch.float64, device=samples.device)[:, None]
    hi = torch.tensor([e[1] for e in ends], dtype=torch.float64, device=samples.device)[:, None]
    k_min = torch.searchsorted(samples, lo, side="left")[:, 0] + 1  # 1-based rank of the first sample >= lo
    k_max = torch.searchsorted(samples, hi, side="right")[:, 0]  # 1-based rank of the last sample <= hi
    radii = [
        bounds.dkw_radius(n, int(k_lo), int(k_hi), sigma, alpha)
        for k_lo, k_hi in zip(k_min.tolist(), k_max.tolist())
    ]
    return torch.tensor(radii, dtype=torch.float64)


def _median(sorted_samples: torch.Tensor) -> torch.Tensor:
    """y_(ceil(n/2)) of rows sorted ascending: the empirical h_0.5."""
    n = sorted_samples.shape[1]
    return sorted_samples[:, math.ceil(n / 2) - 1]
