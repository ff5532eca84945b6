"""Side-by-side comparison of defenses for an IQA model: clean accuracy, score changes
under white-box attacks, certified widths and the soundness of the certificates.

A *defense* is either a plain model (the base model, an NT-fine-tuned one) or a
:class:`~certiqa.SmoothedIQA` (median smoothing, with or without a denoiser).
Attacks on smoothed defenses are adaptive: they climb the expectation over
``eot_samples`` noise draws (through the denoiser) of the base score
(:class:`~certiqa.attacks.ExpectedScore`), and the attacked score is the smoothed
median (same seeded noise as the clean one, so the change is due to the attack).

Soundness: for each certified l2 budget eps and image, adaptive l2 PGD within eps
pushes the smoothed median up and, separately, down; the attacked median is
re-estimated with ``n_check`` (> n) fresh samples, and a certificate is *violated*
when either estimate falls outside the interval certified at the clean image. With
probability >= 1 - alpha per certificate this cannot happen for the population
median, so violations must be rare (about alpha * certificates, up to the
estimation error of the n_check median).
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from statsmodels.stats.proportion import proportion_confint

from . import metrics, robustness
from .attacks import ExpectedScore, SmoothedPGDL2, make_attack
from .evaluation import read_manifest
from .io import IMAGE_EXTENSIONS, read_image
from .smoothing import SmoothedIQA, certify_samples

__all__ = [
    "Defense",
    "BenchmarkConfig",
    "BenchmarkResult",
    "BenchmarkImage",
    "load_benchmark_images",
    "run_benchmark",
    "format_markdown",
    "plot_benchmark",
    "ATTACK_NORMS",
]

ATTACK_NORMS = {"FGSM": "linf", "IFGSM": "linf", "MIFGSM": "linf", "PGD": "linf", "Korhonen": "linf", "PGDL2": "l2"}


@dataclass
class Defense:
    """A column of the comparison: ``model`` (plain) or ``smoothed`` (one of the two)."""

    name: str
    model: nn.Module | None = None
    smoothed: SmoothedIQA | None = None

    def __post_init__(self) -> None:
        if (self.model is None) == (self.smoothed is None):
            raise ValueError(f"defense {self.name!r}: give exactly one of model= or smoothed=.")


@dataclass
class BenchmarkConfig:
    """Settings; the defaults are the documented small CPU setting (``full()`` for GPU).

    ``n``: samples for the certificates; ``n_eval``: samples of the smoothed median in
    the attack rows; ``n_check``: samples re-estimating the attacked median for
    soundness (must exceed ``n``)."""

    sigma: float = 0.12
    n: int = 500
    n_eval: int = 100
    n_check: int = 1000
    alpha: float = 0.01
    linf_budgets: tuple[float, ...] = (2 / 255, 4 / 255, 8 / 255)
    l2_budgets: tuple[float, ...] = (0.1, 0.25, 0.5)
    attacks: tuple[str, ...] = ("FGSM", "IFGSM", "MIFGSM", "PGD", "Korhonen", "PGDL2")
    steps: int = 4
    eot_samples: int = 2
    batch_size: int = 50
    seed: int = 0

    @classmethod
    def full(cls) -> "BenchmarkConfig":
        """The GPU setting: more samples and attack steps."""
        return cls(n=10_000, n_eval=1000, n_check=50_000, alpha=0.001, steps=20, eot_samples=16, batch_size=500)

    def check(self) -> None:
        for name in ("n", "n_eval", "n_check", "steps", "eot_samples", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if self.n_check <= self.n:
            raise ValueError(f"n_check ({self.n_check}) must exceed n ({self.n}) for the soundness check.")
        unknown = [a for a in self.attacks if a not in ATTACK_NORMS]
        if unknown:
            raise ValueError(f"unknown attacks {unknown}; choose from {sorted(ATTACK_NORMS)}.")
        if not 0 < self.alpha < 1 or self.sigma <= 0:
            raise ValueError(f"need 0 < alpha < 1 and sigma > 0, got alpha={self.alpha}, sigma={self.sigma}.")


@dataclass(frozen=True)
class BenchmarkImage:
    """An image (3, H, W) in [0, 1] with an optional human score normalised to [0, 1], higher = better."""

    name: str
    image: torch.Tensor
    human: float | None = None


@dataclass
class BenchmarkResult:
    """``rows``: one dict per (metric, defense): metric, defense, value (float or str)."""

    defenses: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, metric: str, defense: str, value: Any) -> None:
        self.rows.append({"metric": metric, "defense": defense, "value": value})

    def value(self, metric: str, defense: str) -> Any:
        for row in self.rows:
            if row["metric"] == metric and row["defense"] == defense:
                return row["value"]
        raise KeyError(f"no row {metric!r} for defense {defense!r}")

    def write_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["metric", "defense", "value"])
            writer.writeheader()
            writer.writerows(self.rows)


def load_benchmark_images(data: str | Path, count: int, resize: int | None = 192) -> list[BenchmarkImage]:
    """``count`` images of the shared data set, labelled ones first (their human scores
    normalised to [0, 1], higher = better), then distorted, reference and ladder images,
    in manifest order; shorter side resized to ``resize``."""
    data = Path(data)
    rows = [r for r in read_manifest(data, scored_only=False) if r.file.lower().endswith(IMAGE_EXTENSIONS)]
    order = ("images/labelled/", "images/distorted/", "images/reference/", "images/ladders/")
    chosen = [r for prefix in order for r in rows if r.file.startswith(prefix)][:count]
    if len(chosen) < count:
        raise ValueError(f"asked for {count} images but {data / 'manifest.csv'} lists {len(chosen)}.")
    return [
        BenchmarkImage(
            Path(r.file).name,
            read_image(data / r.file, resize=resize, min_size=33).image,
            r.goodness if r.file.startswith("images/labelled/") else None,
        )
        for r in chosen
    ]


def _budget_label(norm: str, eps: float) -> str:
    if norm == "linf":
        return f"linf {eps * 255:.3g}/255"
    return f"l2 {eps:.3g}"


def _with_n(smoothed: SmoothedIQA, n: int, seed: int) -> SmoothedIQA:
    return SmoothedIQA(
        smoothed.model, smoothed.sigma, n=n, alpha=smoothed.alpha, batch_size=smoothed.batch_size,
        clip=smoothed.clip, denoiser=smoothed.denoiser, seed=seed,
    )


def _quality(scores: torch.Tensor, lower_better: bool) -> torch.Tensor:
    return -scores if lower_better else scores


def run_benchmark(
    defenses: Sequence[Defense],
    images: Sequence[BenchmarkImage],
    config: BenchmarkConfig,
    *,
    score_range: tuple[float, float],
    lower_better: bool,
    progress: bool = True,
) -> BenchmarkResult:
    """Run every attack, budget and (for smoothed defenses) certificate on every image.

    The first defense is the reference for the "vs base" correlations. Each image is
    processed on its own (sizes differ). Attacks push each score towards the farther
    end of ``score_range`` (the direction of the robustness score R).
    """
    config.check()
    if not defenses or not images:
        raise ValueError("run_benchmark needs at least one defense and one image.")
    result = BenchmarkResult([d.name for d in defenses])
    lo, hi = score_range
    human_idx = [i for i, im in enumerate(images) if im.human is not None]
    base_clean: torch.Tensor | None = None
    budgets = [(a, e) for a in config.attacks for e in (config.linf_budgets if ATTACK_NORMS[a] == "linf" else config.l2_budgets)]
    for defense in defenses:
        start = time.perf_counter()
        smoothed_eval = None if defense.smoothed is None else _with_n(defense.smoothed, config.n_eval, config.seed)

        def score(x: torch.Tensor) -> torch.Tensor:
            if smoothed_eval is not None:
                return smoothed_eval.predict(x).cpu()
            with torch.no_grad():
                return defense.model.eval()(x).reshape(-1).cpu()

        target: nn.Module = (
            ExpectedScore(smoothed_eval, config.eot_samples, seed=config.seed) if smoothed_eval else defense.model
        )
        clean = torch.cat([score(im.image[None]) for im in images])
        if base_clean is None:
            base_clean = clean
        _clean_rows(result, defense.name, clean, base_clean, images, human_idx, lower_better)
        directions = ["up" if hi - float(c) >= float(c) - lo else "down" for c in clean]
        bar = tqdm(total=len(budgets) * len(images), desc=f"attacks on {defense.name}", disable=not progress)
        for attack_name, eps in budgets:
            attacked = []
            for im, direction in zip(images, directions):
                kwargs: dict[str, Any] = {"direction": direction, "seed": config.seed}
                if attack_name != "FGSM":
                    kwargs["steps"] = config.steps
                attack = make_attack(attack_name, target, eps, **kwargs)
                attacked.append(score(attack(im.image[None])))
                bar.update(1)
            attacked_t = torch.cat(attacked)
            label = f"{attack_name} {_budget_label(ATTACK_NORMS[attack_name], eps)}"
            result.add(f"{label}: mean abs change", defense.name, float(robustness.absolute_change(clean, attacked_t).mean()))
            result.add(f"{label}: R", defense.name, robustness.robustness_score(clean, attacked_t, score_range))
        bar.close()
        if defense.smoothed is not None:
            _certify_rows(result, defense, images, config, progress)
        result.seconds[defense.name] = time.perf_counter() - start
    return result


def _clean_rows(
    result: BenchmarkResult,
    name: str,
    clean: torch.Tensor,
    base_clean: torch.Tensor,
    images: Sequence[BenchmarkImage],
    human_idx: list[int],
    lower_better: bool,
) -> None:
    if len(human_idx) >= 3:
        q = _quality(clean[human_idx], lower_better)
        h = torch.tensor([images[i].human for i in human_idx])
        result.add(f"clean SROCC vs human ({len(human_idx)} img)", name, metrics.srocc(q, h))
        result.add(f"clean PLCC vs human ({len(human_idx)} img)", name, metrics.plcc(q, h, mapping="none"))
    if len(images) >= 3:
        result.add(f"clean SROCC vs base ({len(images)} img)", name, metrics.srocc(clean, base_clean))
        result.add(f"clean PLCC vs base ({len(images)} img)", name, metrics.plcc(clean, base_clean, mapping="none"))


def _certify_rows(
    result: BenchmarkResult,
    defense: Defense,
    images: Sequence[BenchmarkImage],
    config: BenchmarkConfig,
    progress: bool,
) -> None:
    """Certified widths at every l2 budget and the soundness counts of those certificates."""
    smoothed = _with_n(defense.smoothed, config.n, config.seed + 1)
    checker = _with_n(defense.smoothed, config.n_check, config.seed + 2)
    samples = torch.stack([smoothed.sample(im.image[None])[0] for im in images])
    bar = tqdm(total=len(config.l2_budgets) * len(images), desc=f"soundness of {defense.name}", disable=not progress)
    for eps in config.l2_budgets:
        cert = certify_samples(samples, eps, smoothed.sigma, config.alpha)
        label = _budget_label("l2", eps)
        if not bool(cert.certified.any()):
            result.add(f"certified {label}: width (certified/images)", defense.name, f"none/{len(images)}")
            result.add(f"soundness {label}: violations/certificates", defense.name, "n/a")
            bar.update(len(images))
            continue
        violations = 0
        for i, im in enumerate(images):
            escaped = False
            for direction in ("up", "down"):
                attack = SmoothedPGDL2(
                    smoothed, eps, steps=config.steps, samples=config.eot_samples, direction=direction,
                    seed=config.seed,
                )
                moved = float(checker.predict(attack(im.image[None])))
                escaped |= not float(cert.lower[i]) <= moved <= float(cert.upper[i])
            violations += int(escaped)
            bar.update(1)
        certified = int(cert.certified.sum())
        mean_width = float(cert.width[cert.certified].mean())
        # exact (Clopper-Pearson) 95% upper bound on the violation rate, to read against alpha
        _, rate_hi = proportion_confint(violations, certified, alpha=0.05, method="beta")
        result.add(f"certified {label}: width (certified/images)", defense.name, f"{mean_width:.3g} ({certified}/{len(images)})")
        result.add(
            f"soundness {label}: violations/certificates",
            defense.name,
            f"{violations}/{certified} (rate <= {rate_hi:.2g} at 95%; alpha={config.alpha:g})",
        )
    bar.close()
    result.add("smoothed median, mean over images (n)", defense.name, float(certify_samples(
        samples, 0.0, smoothed.sigma, config.alpha).median.mean()))


def format_markdown(result: BenchmarkResult, digits: int = 3) -> str:
    """A markdown table: one row per metric (first-seen order), one column per defense; '—' where not applicable."""
    metrics_order: list[str] = []
    for row in result.rows:
        if row["metric"] not in metrics_order:
            metrics_order.append(row["metric"])
    cells = {(r["metric"], r["defense"]): r["value"] for r in result.rows}

    def fmt(value: Any) -> str:
        if value is None:
            return "—"
        if isinstance(value, float):
            return "inf" if math.isinf(value) else f"{value:.{digits}g}"
        return str(value)

    lines = ["| metric | " + " | ".join(result.defenses) + " |", "| --- |" + " --- |" * len(result.defenses)]
    for metric in metrics_order:
        lines.append(f"| {metric} | " + " | ".join(fmt(cells.get((metric, d))) for d in result.defenses) + " |")
    if result.seconds:
        lines.append("| seconds | " + " | ".join(f"{result.seconds.get(d, float('nan')):.0f}" for d in result.defenses) + " |")
    return "\n".join(lines)


def plot_benchmark(result: BenchmarkResult, config: BenchmarkConfig, path: str | Path) -> None:
    """Mean |Δ| against budget, one panel per norm (strongest attack of that norm per budget),
    one line per defense. Needs matplotlib (``pip install certiqa[plot]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plot_benchmark needs matplotlib: pip install 'certiqa[plot]'.") from None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, norm, budgets in ((axes[0], "linf", config.linf_budgets), (axes[1], "l2", config.l2_budgets)):
        names = [a for a in config.attacks if ATTACK_NORMS[a] == norm]
        if not names:
            ax.set_visible(False)
            continue
        for defense in result.defenses:
            worst = [
                max(result.value(f"{a} {_budget_label(norm, e)}: mean abs change", defense) for a in names) for e in budgets
            ]
            xs = [e * 255 for e in budgets] if norm == "linf" else list(budgets)
            ax.plot(xs, worst, marker="o", label=defense)
        ax.set_xlabel("eps (x/255, l-inf)" if norm == "linf" else "eps (l2, [0,1] pixels)")
        ax.set_ylabel("mean |score change| (worst attack)")
        ax.set_title(f"{norm} attacks ({', '.join(names)})")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
