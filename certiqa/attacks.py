"""Adversarial attacks on IQA models (regression), in the spirit of torchattacks: white-box
gradient attacks and one query-based black-box attack (:class:`SquareAttack`).

Usage::

    attack = IFGSM(model, eps=4 / 255, steps=10, direction="away")
    x_adv = attack(x)          # x: (B, C, H, W) in [0, 1]

Every attack maximises ``sign_i * f(x_i')`` per image, the sign set by ``direction``:

- ``"up"`` / ``"down"``: raise / lower the raw score;
- ``"better"`` / ``"worse"``: move it towards better / worse quality, using the
  model's ``lower_better`` (taken from the model when it has that attribute);
- ``"away"``: push it away from its clean value towards the farther end of the
  score range ``(lo, hi)``: up when ``hi - f(x) >= f(x) - lo``, else down (the
  direction used by the robustness score R of Zhang et al.).

Guarantees (tested): ``x_adv`` lies in [0, 1], ``||x_adv - x||_inf <= eps`` for the
l-inf attacks and ``||x_adv - x||_2 <= eps`` (per image) for the l2 ones. Models run
in eval mode; only the input gradient is computed (parameters get no ``.grad``).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import betainc
from torch import nn

from ._checks import check_images, check_int, check_nonnegative, check_open_unit, check_positive, check_scores
from .smoothing import SmoothedIQA, _device_of, _eval_mode

__all__ = [
    "Attack",
    "FGSM",
    "IFGSM",
    "MIFGSM",
    "PGD",
    "PGDL2",
    "Korhonen",
    "ExpectedScore",
    "SmoothedPGDL2",
    "harrell_davis_weights",
    "sobel_activity",
    "DIRECTIONS",
    "make_attack",
    "SquareAttack",
]

DIRECTIONS = ("up", "down", "better", "worse", "away")
ScoreModel = Callable[[torch.Tensor], torch.Tensor]


def _l2(t: torch.Tensor) -> torch.Tensor:
    """Per-image l2 norm, shape (B, 1, 1, 1)."""
    return t.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


class Attack:
    """Shared loop: gradient of the signed score -> step -> project onto the budget -> clamp to [0, 1].

    Args:
        model: ``nn.Module`` or callable, images (B, C, H, W) in [0, 1] -> scores (B,) or (B, 1).
        eps: perturbation budget (l-inf or l2, by the attack's ``norm``), in [0, 1] pixel units.
        alpha: step size (default: subclass-specific).
        steps: gradient steps.
        direction: one of :data:`DIRECTIONS`.
        lower_better: whether lower scores mean better quality (default: the model's
            ``lower_better`` attribute); needed for ``"better"`` / ``"worse"``.
        score_range: (lo, hi) of the score scale (default: the model's ``score_range``);
            needed for ``"away"``.
        random_start: start from a uniform point of the budget ball.
        seed: seed of the random start (None: fresh randomness).
    """

    norm = "linf"
    default_steps = 10

    def __init__(
        self,
        model: nn.Module | ScoreModel,
        eps: float,
        *,
        alpha: float | None = None,
        steps: int | None = None,
        direction: str = "away",
        lower_better: bool | None = None,
        score_range: tuple[float, float] | None = None,
        random_start: bool = False,
        seed: int | None = None,
    ) -> None:
        if not callable(model):
            raise TypeError(f"model must be an nn.Module or a callable, got {type(model).__name__}.")
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}.")
        self.model = model
        self.eps = check_nonnegative("eps", eps)
        self.steps = check_int("steps", self.default_steps if steps is None else steps)
        self.alpha = check_positive("alpha", self.default_alpha() if alpha is None else alpha) if self.eps > 0 else 0.0
        self.direction = direction
        self.lower_better = getattr(model, "lower_better", None) if lower_better is None else bool(lower_better)
        self.score_range = getattr(model, "score_range", None) if score_range is None else tuple(score_range)
        if direction in ("better", "worse") and self.lower_better is None:
            raise ValueError(
                f"direction={direction!r} needs to know whether lower scores are better: pass lower_better=True/False "
                "or give the model a lower_better attribute."
            )
        if direction == "away" and (self.score_range is None or len(self.score_range) != 2):
            raise ValueError(
                "direction='away' needs the score range (lo, hi): pass score_range=(lo, hi) or give the model a "
                "score_range attribute."
            )
        self.random_start = bool(random_start)
        self.seed = seed

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(eps={self.eps:.4g}, alpha={self.alpha:.4g}, steps={self.steps}, "
            f"direction={self.direction!r})"
        )

    def default_alpha(self) -> float:
        return 2.5 * self.eps / self.steps

    # --- hooks -------------------------------------------------------------
    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable scores (B,) that the attack climbs."""
        return check_scores(self.model(x), x.shape[0], where="the attacked model")

    def clean_scores(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of the clean images, used to choose the ``"away"`` direction."""
        with torch.no_grad():
            return self.scores(x)

    def transform_grad(self, grad: torch.Tensor, state: dict[str, Any]) -> torch.Tensor:
        """Hook for momentum or masks; identity here."""
        return grad

    def step(self, grad: torch.Tensor) -> torch.Tensor:
        """The update added to delta (l-inf: alpha * sign(grad); l2: normalised gradient)."""
        if self.norm == "linf":
            return self.alpha * grad.sign()
        return self.alpha * grad / _l2(grad).clamp_min(1e-12)

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        """Project delta onto the eps-ball of the attack's norm."""
        if self.norm == "linf":
            return delta.clamp(-self.eps, self.eps)
        return delta * (self.eps / _l2(delta).clamp_min(1e-12)).clamp(max=1.0)

    # --- the loop ------------------------------------------------------------
    def signs(self, clean: torch.Tensor) -> torch.Tensor:
        """+1 / -1 per image: which way the attack pushes the raw score."""
        if self.direction == "up":
            return torch.ones_like(clean)
        if self.direction == "down":
            return -torch.ones_like(clean)
        if self.direction in ("better", "worse"):
            up = (self.direction == "better") != bool(self.lower_better)
            return torch.full_like(clean, 1.0 if up else -1.0)
        lo, hi = (float(v) for v in self.score_range)
        return torch.where(hi - clean >= clean - lo, 1.0, -1.0).to(clean.dtype)

    def _random_delta(self, x: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator(device=x.device)
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)
        if self.norm == "linf":
            return (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * self.eps
        direction = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        dim = x[0].numel()
        radius = torch.rand((x.shape[0], 1, 1, 1), generator=generator, device=x.device, dtype=x.dtype) ** (1 / dim)
        return direction / _l2(direction).clamp_min(1e-12) * radius * self.eps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Adversarial images, same shape, dtype and device as ``x``, detached."""
        check_images(x)
        device = _device_of(self.model, x.device)
        x0 = x.detach().to(device)
        if self.eps == 0:
            return x.detach().clone()
        with _eval_mode(self.model):
            sign = self.signs(self.clean_scores(x0)).to(x0.dtype)
            delta = self._random_delta(x0) if self.random_start else torch.zeros_like(x0)
            delta = (x0 + self.project(delta)).clamp(0, 1) - x0
            state: dict[str, Any] = {"x": x0}
            for _ in range(self.steps):
                xa = (x0 + delta).requires_grad_(True)
                with torch.enable_grad():
                    objective = (sign * self.scores(xa)).sum()
                    (grad,) = torch.autograd.grad(objective, xa)
                delta = delta + self.step(self.transform_grad(grad.detach(), state))
                delta = (x0 + self.project(delta)).clamp(0, 1) - x0
        return (x0 + delta).detach().to(x.device)


class FGSM(Attack):
    """One signed-gradient step of size eps (Goodfellow et al., 2015), l-inf."""

    default_steps = 1

    def __init__(self, model: nn.Module | ScoreModel, eps: float, **kwargs: Any) -> None:
        if kwargs.get("steps", 1) != 1 or "alpha" in kwargs:
            raise ValueError("FGSM takes one step of size eps; use IFGSM for several steps or another step size.")
        super().__init__(model, eps, **kwargs)

    def default_alpha(self) -> float:
        return self.eps


class IFGSM(Attack):
    """Iterative FGSM (Kurakin et al., 2017), l-inf, no random start; alpha defaults to eps / steps."""

    def default_alpha(self) -> float:
        return self.eps / self.steps


class MIFGSM(Attack):
    """Momentum I-FGSM (Dong et al., 2018): g <- decay * g + grad / mean|grad|, l-inf."""

    def __init__(self, model: nn.Module | ScoreModel, eps: float, *, decay: float = 1.0, **kwargs: Any) -> None:
        super().__init__(model, eps, **kwargs)
        self.decay = check_nonnegative("decay", decay)

    def default_alpha(self) -> float:
        return self.eps / self.steps

    def transform_grad(self, grad: torch.Tensor, state: dict[str, Any]) -> torch.Tensor:
        normed = grad / grad.abs().flatten(1).mean(dim=1).view(-1, 1, 1, 1).clamp_min(1e-12)
        state["momentum"] = self.decay * state.get("momentum", torch.zeros_like(grad)) + normed
        return state["momentum"]


class PGD(Attack):
    """Projected gradient descent in l-inf (Madry et al., 2018) with a uniform random start."""

    def __init__(self, model: nn.Module | ScoreModel, eps: float, **kwargs: Any) -> None:
        kwargs.setdefault("random_start", True)
        super().__init__(model, eps, **kwargs)


class PGDL2(Attack):
    """Projected gradient descent in l2 with a random start in the l2 ball; steps of l2 length alpha."""

    norm = "l2"

    def __init__(self, model: nn.Module | ScoreModel, eps: float, **kwargs: Any) -> None:
        kwargs.setdefault("random_start", True)
        super().__init__(model, eps, **kwargs)


def sobel_activity(x: torch.Tensor) -> torch.Tensor:
    """Sobel gradient magnitude of the luma of ``x`` (B, C, H, W), scaled to max 1 per image: (B, 1, H, W)."""
    gray = x.mean(dim=1, keepdim=True) if x.shape[1] != 3 else (
        x * torch.tensor((0.299, 0.587, 0.114), dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    ).sum(dim=1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    kernels = torch.stack((kx, kx.t())).unsqueeze(1)
    g = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)
    magnitude = g.pow(2).sum(dim=1, keepdim=True).sqrt()
    return magnitude / magnitude.flatten(1).amax(dim=1).view(-1, 1, 1, 1).clamp_min(1e-12)


class Korhonen(Attack):
    """Korhonen & You (2022)-style attack: signed-gradient steps masked by a Sobel activity map.

    The perturbation concentrates on textured regions where it is least visible:
    each step is ``alpha * sign(grad) * A``, A the Sobel magnitude of the clean image
    scaled to [0, 1]; l-inf budget eps.
    """

    def default_alpha(self) -> float:
        return self.eps / self.steps

    def transform_grad(self, grad: torch.Tensor, state: dict[str, Any]) -> torch.Tensor:
        if "mask" not in state:
            state["mask"] = sobel_activity(state["x"])
        return grad.sign() * state["mask"]

    def step(self, grad: torch.Tensor) -> torch.Tensor:
        return self.alpha * grad  # already signed and masked


class ExpectedScore(nn.Module):
    """Differentiable surrogate of a smoothed model: the mean of ``f(D(clip(x + sigma G)))``
    over ``samples`` fresh noise draws per image (expectation over transformation).

    Input (B, C, H, W), output (B,). Carries the base model's ``lower_better`` and
    ``score_range`` so attacks can read them.
    """

    def __init__(self, smoothed: SmoothedIQA, samples: int = 8, seed: int | None = None) -> None:
        super().__init__()
        if not isinstance(smoothed, SmoothedIQA):
            raise TypeError(f"smoothed must be a certiqa.SmoothedIQA, got {type(smoothed).__name__}.")
        self.smoothed = smoothed
        self.samples = check_int("samples", samples)
        self.seed = seed
        self._generator: torch.Generator | None = None
        for name in ("lower_better", "score_range"):
            if hasattr(smoothed.model, name):
                setattr(self, name, getattr(smoothed.model, name))
        # register the wrapped modules so eval-mode switching and device lookup reach them
        self.base = smoothed.model if isinstance(smoothed.model, nn.Module) else None
        self.denoiser = smoothed.denoiser if isinstance(smoothed.denoiser, nn.Module) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._generator is None or self._generator.device != x.device:
            self._generator = torch.Generator(device=x.device)
            if self.seed is None:
                self._generator.seed()
            else:
                self._generator.manual_seed(self.seed)
        batch, k = x.shape[0], self.samples
        repeated = x.repeat_interleave(k, dim=0)
        noise = torch.randn(repeated.shape, generator=self._generator, device=x.device, dtype=x.dtype)
        return self.smoothed.base_scores(repeated, noise).view(batch, k).mean(dim=1)


def harrell_davis_weights(k: int, q: float) -> torch.Tensor:
    """Weights (k,) of the Harrell-Davis estimate of the q-quantile from k sorted samples.

    The estimate is ``sum_i W_i y_(i)`` with ``W_i = I_{i/k}(a, b) - I_{(i-1)/k}(a, b)``,
    ``a = q (k + 1)``, ``b = (1 - q)(k + 1)``, I the regularised incomplete beta function:
    a smooth L-estimator whose gradient reaches every sample near the quantile, not only
    the one or two at it. The weights are >= 0 and sum to 1.
    """
    check_int("k", k)
    if not 0 < q < 1:
        raise ValueError(f"q must lie strictly between 0 and 1, got {q!r}.")
    edges = betainc(q * (k + 1), (1 - q) * (k + 1), np.arange(k + 1) / k)
    return torch.from_numpy(np.diff(edges))


class SmoothedPGDL2(PGDL2):
    """Adaptive l2 PGD against the *median* of a smoothed model (or another percentile).

    The smoothed score of x' = x + delta is the median of f(D(clip(x' + G))); each step
    climbs a smooth estimate of that median: the Harrell-Davis quantile
    (:func:`harrell_davis_weights`) of ``samples`` noisy scores, whose gradient is
    ``sum_k W_rank(k) grad f(D(clip(x' + G_k))))`` through the clip and the denoiser.
    ``objective="mean"`` climbs the mean instead (expectation over transformation),
    and a float q in (0, 1) the q-quantile.

    - Noise draws: each step's gradient uses ``samples`` fresh draws, and its two
      passes (scores for the ranks, then gradients) share them; the restarts are
      compared on one shared selection draw (common random numbers). With
      ``common_noise=True`` every step of a restart reuses the same draws instead,
      which makes the objective one fixed function of delta but lets the steps
      exploit that draw's sampling noise: on a linear model with a rough planted
      perturbation (tests/test_attacks.py) fresh draws reached 99.6 % of the
      achievable median shift in the strong setting and common draws 93 %. Draws are
      regenerated from seeds chunk by chunk (memory bounded by ``batch_size``).
    - Steps of l2 length ``step_size * (1 + cos(pi t / steps)) / 2`` (cosine decay;
      ``step_size`` defaults to eps / 2), projection onto the l2 ball and [0, 1].
    - ``restarts``: the first starts at delta = 0, later ones uniformly in the ball;
      the restart whose final point scores best on one shared selection draw wins.
    - The ``"away"`` direction is chosen from the smoothed median (n samples).

    The cheap default is 10 steps x 32 draws; :meth:`strong` gives 50 steps x 256 draws
    x 3 restarts. Images are attacked one at a time.
    """

    def __init__(
        self,
        smoothed: SmoothedIQA,
        eps: float,
        *,
        samples: int = 32,
        objective: str | float = "median",
        restarts: int = 1,
        step_size: float | None = None,
        common_noise: bool = False,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(smoothed, SmoothedIQA):
            raise TypeError(f"smoothed must be a certiqa.SmoothedIQA, got {type(smoothed).__name__}.")
        if "alpha" in kwargs:
            raise ValueError("SmoothedPGDL2 takes step_size= (the first step's l2 length), not alpha=.")
        if objective == "median":
            objective = 0.5
        if objective != "mean" and not (isinstance(objective, float) and 0 < objective < 1):
            raise ValueError(f"objective must be 'median', 'mean' or a float in (0, 1), got {objective!r}.")
        self.smoothed = smoothed
        self.samples = check_int("samples", samples)
        self.objective = objective
        self.restarts = check_int("restarts", restarts)
        self.common_noise = bool(common_noise)
        kwargs.setdefault("random_start", False)
        model = ExpectedScore(smoothed, self.samples, seed)  # carries lower_better / score_range
        super().__init__(model, eps, alpha=step_size, seed=seed, **kwargs)

    @classmethod
    def strong(cls, smoothed: SmoothedIQA, eps: float, **kwargs: Any) -> "SmoothedPGDL2":
        """The strong setting: 50 steps, 256 noise draws per step, 3 restarts (overridable)."""
        settings = {"steps": 50, "samples": 256, "restarts": 3} | kwargs
        return cls(smoothed, eps, **settings)

    def default_alpha(self) -> float:
        return self.eps / 2

    def __repr__(self) -> str:
        return (
            f"SmoothedPGDL2(eps={self.eps:.4g}, step_size={self.alpha:.4g}, steps={self.steps}, "
            f"samples={self.samples}, objective={self.objective!r}, restarts={self.restarts}, "
            f"direction={self.direction!r})"
        )

    def clean_scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.smoothed.predict(x).to(device=x.device, dtype=x.dtype)

    def _noise(self, x: torch.Tensor, draw_seed: int, start: int, stop: int) -> torch.Tensor:
        """Noise draws start..stop of the draw set ``draw_seed``: the same tensors every call."""
        generator = torch.Generator(device=x.device).manual_seed(draw_seed * 1_000_003 + start)
        return torch.randn((stop - start,) + tuple(x.shape[1:]), generator=generator, device=x.device, dtype=x.dtype)

    def _weights(self, scores: torch.Tensor) -> torch.Tensor:
        """Per draw, its weight in the objective: Harrell-Davis weight of its rank, or 1/k."""
        k = scores.shape[0]
        if self.objective == "mean":
            return torch.full_like(scores, 1.0 / k)
        weights = harrell_davis_weights(k, self.objective).to(scores)
        out = torch.empty_like(scores)
        out[scores.argsort()] = weights
        return out

    def _objective(self, x: torch.Tensor, draw_seed: int, with_grad: bool) -> tuple[float, torch.Tensor | None]:
        """The surrogate at ``x`` (1, C, H, W) on draw set ``draw_seed``, and its input gradient."""
        chunk = self.smoothed.batch_size
        spans = [(s, min(s + chunk, self.samples)) for s in range(0, self.samples, chunk)]
        with torch.no_grad():
            scores = torch.cat([
                self.smoothed.base_scores(x.expand(b - a, *x.shape[1:]), self._noise(x, draw_seed, a, b))
                for a, b in spans
            ])
        weights = self._weights(scores)
        value = float((weights * scores).sum())
        if not with_grad:
            return value, None
        grad = torch.zeros_like(x)
        for a, b in spans:  # sum_k w_k grad f_k, accumulated chunk by chunk
            xa = x.detach().requires_grad_(True)
            with torch.enable_grad():
                part = (weights[a:b] * self.smoothed.base_scores(xa.expand(b - a, *x.shape[1:]),
                                                                 self._noise(x, draw_seed, a, b))).sum()
                (g,) = torch.autograd.grad(part, xa)
            grad += g
        return value, grad

    def _attack_one(self, x0: torch.Tensor, sign: float, base_seed: int) -> torch.Tensor:
        best, best_value = x0, -math.inf
        for restart in range(self.restarts):
            if restart == 0:
                delta = torch.zeros_like(x0)
            else:
                generator = torch.Generator(device=x0.device).manual_seed(base_seed + restart)
                direction = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
                radius = float(torch.rand((), generator=generator, device=x0.device)) ** (1 / x0.numel())
                delta = direction / _l2(direction).clamp_min(1e-12) * radius * self.eps
            delta = (x0 + self.project(delta)).clamp(0, 1) - x0
            draws = base_seed * 97 + restart + 1
            for t in range(self.steps):
                step_draws = draws if self.common_noise else draws + 10_007 * (t + 1)
                _, grad = self._objective(x0 + delta, step_draws, with_grad=True)
                size = self.alpha * 0.5 * (1 + math.cos(math.pi * t / self.steps))
                delta = delta + size * sign * grad / _l2(grad).clamp_min(1e-12)
                delta = (x0 + self.project(delta)).clamp(0, 1) - x0
            candidate = x0 + delta
            value = sign * self._objective(candidate, base_seed * 97, with_grad=False)[0]  # shared selection draw
            if value > best_value:
                best, best_value = candidate, value
        return best

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Adversarial images, same shape, dtype and device as ``x``, detached."""
        check_images(x)
        device = self.smoothed.device_for(x)
        x0 = x.detach().to(device)
        if self.eps == 0:
            return x.detach().clone()
        base_seed = self.seed if self.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
        with _eval_mode(self.smoothed.model, self.smoothed.denoiser):
            signs = self.signs(self.clean_scores(x0)).tolist()
            out = [self._attack_one(x0[i : i + 1], signs[i], base_seed + 7919 * i) for i in range(x0.shape[0])]
        return torch.cat(out).detach().to(x.device)


def _check_attack_name(name: str) -> type[Attack]:
    classes = {c.__name__: c for c in (FGSM, IFGSM, MIFGSM, PGD, PGDL2, Korhonen)}
    if name not in classes:
        raise ValueError(f"unknown attack {name!r}; choose from {sorted(classes)}.")
    return classes[name]


def make_attack(name: str, model: nn.Module | ScoreModel, eps: float, **kwargs: Any) -> Attack:
    """Build an attack by class name (``"FGSM"``, ``"IFGSM"``, ``"MIFGSM"``, ``"PGD"``, ``"PGDL2"``, ``"Korhonen"``)."""
    return _check_attack_name(name)(model, eps, **kwargs)


class SquareAttack(Attack):
    """Square attack (Andriushchenko et al., ECCV 2020) in l-inf, for regression: a
    query-based random search that reads scores only, never gradients, so masked or
    obfuscated gradients do not stop it.

    It starts from vertical stripes of +-eps (kept when they beat the clean image);
    each further query sets one random square window of the perturbation to a random
    vertex (+-eps per channel, the same for the whole window) and keeps the change
    when the signed score improves. The window covers a fraction p of the pixels,
    ``p_init`` halved at 0.1, 0.5, 2, 5, 10, 20, 40, 60 and 80 % of the budget (the
    published schedule).

    Args:
        model, eps, direction, lower_better, score_range, seed: as for :class:`Attack`
            (``eps`` is an l-inf budget; ``seed`` seeds the search).
        queries: model evaluations per image, all counted: the clean score, the
            stripes and ``queries - 2`` windows (>= 2).
        p_init: initial fraction of the pixels in a window, in (0, 1).

    After a call, ``queries_used`` (B,) counts the model evaluations of each image
    (never more than ``queries``) and ``objective`` (B,) is the best signed score
    reached (``sign * f(x_adv)``, sign +1 to raise the score, -1 to lower it); the
    returned images never score worse than the clean ones on that objective when the
    model is deterministic.
    """

    def __init__(self, model: nn.Module | ScoreModel, eps: float, *, queries: int = 1000, p_init: float = 0.05,
                 **kwargs: Any) -> None:
        given = sorted(set(kwargs) & {"alpha", "steps", "random_start"})
        if given:
            raise ValueError(f"SquareAttack takes queries= and p_init=, not {given}: it follows no gradient.")
        self.queries = check_int("queries", queries, minimum=2)
        super().__init__(model, eps, **kwargs)
        self.steps = self.queries - 2  # window proposals
        self.p_init = check_open_unit("p_init", p_init)
        self.queries_used: torch.Tensor | None = None
        self.objective: torch.Tensor | None = None

    def __repr__(self) -> str:
        return (f"SquareAttack(eps={self.eps:.4g}, queries={self.queries}, p_init={self.p_init:g}, "
                f"direction={self.direction!r})")

    def window_side(self, proposal: int, height: int, width: int) -> int:
        """Side of the square window at proposal ``proposal`` (0-based) for an H x W image."""
        progress = proposal / max(self.steps, 1)
        halvings = sum(progress >= t for t in (0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8))
        p = self.p_init / 2**halvings
        return int(min(max(round(math.sqrt(p * height * width)), 1), height, width))

    def _query(self, x: torch.Tensor) -> torch.Tensor:
        assert self.queries_used is not None
        self.queries_used += 1
        return self.scores(x)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Adversarial images, same shape, dtype and device as ``x``, within eps in l-inf and in [0, 1]."""
        check_images(x)
        device = _device_of(self.model, x.device)
        x0 = x.detach().to(device)
        batch, channels, height, width = x0.shape
        self.queries_used = torch.zeros(batch, dtype=torch.long)
        generator = torch.Generator()
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(self.seed)

        def vertex(shape: tuple[int, ...]) -> torch.Tensor:
            signs = torch.randint(0, 2, shape, generator=generator) * 2 - 1
            return (self.eps * signs).to(device=device, dtype=x0.dtype)

        with torch.no_grad(), _eval_mode(self.model):
            clean = self._query(x0)
            sign = self.signs(clean).to(x0.dtype)
            best = sign * clean
            self.objective = best.clone()
            if self.eps == 0:
                return x.detach().clone()
            delta = torch.zeros_like(x0)
            stripes = (x0 + vertex((batch, channels, 1, width))).clamp(0, 1) - x0
            for proposal in range(-1, self.steps):
                if proposal == -1:
                    candidate = stripes
                else:
                    side = self.window_side(proposal, height, width)
                    rows = torch.randint(0, height - side + 1, (batch,), generator=generator).tolist()
                    cols = torch.randint(0, width - side + 1, (batch,), generator=generator).tolist()
                    values = vertex((batch, channels, 1, 1))
                    candidate = delta.clone()
                    for b, (r, c) in enumerate(zip(rows, cols)):
                        window = (slice(r, r + side), slice(c, c + side))
                        base = x0[b][(slice(None), *window)]
                        new = (base + values[b]).clamp(0, 1) - base
                        if torch.equal(new, delta[b][(slice(None), *window)]):
                            new = (base - values[b]).clamp(0, 1) - base  # the other vertex: never a wasted query
                        candidate[b][(slice(None), *window)] = new
                objective = sign * self._query(x0 + candidate)
                better = objective > best
                delta = torch.where(better.view(-1, 1, 1, 1), candidate, delta)
                best = torch.where(better, objective, best)
            self.objective = best
        return (x0 + delta).detach().to(x.device)
