"""Side-by-side comparison of defenses for an IQA model, run the way the IQA-defense
benchmarks run it: white-box and black-box attacks, adaptive and transferred, and two
objectives (scores kept under attack; the image the model sees kept close to the input).

A *defense* (a column) is a plain model (the base model, an NT-fine-tuned one), a
purified model (:class:`certiqa.defenses.Purified`) or a :class:`~certiqa.SmoothedIQA`
(median smoothing, with or without a denoiser).

Attacks are adaptive. On purified models the white-box attacks backpropagate through
the purification, or through the identity where it is not differentiable (BPDA), and
average over ``eot_samples`` draws of a random purification (EOT); the attacked score
is taken under the same draw as the clean score (one seeded draw per image, apart from
the attacker's draws). On smoothed models they climb the expectation over ``eot_samples`` noise
draws (through the denoiser) of the base score (:class:`~certiqa.attacks.ExpectedScore`)
and the attacked score is the smoothed median on the same seeded noise as the clean
one, so the change is due to the attack. The black-box Square attack
(:class:`~certiqa.attacks.SquareAttack`) queries the defended model as deployed: fresh
draws of a random purification and fresh noise for every smoothed query. The
*transfer* rows score, on each defense, the adversarial images made against the
first (base) column: the non-adaptive setting.

Second objective: PSNR and SSIM of the image the model sees (the purified image; for
smoothing the noisy, denoised image) against the clean input, over ``fidelity_draws``
draws, and the shift of the clean score from the base model's.

Soundness: for each certified l2 budget eps and image (the first ``check_images``
of them), adaptive l2 PGD within eps
pushes the smoothed median up and, separately, down; the attacked median is
re-estimated with ``n_check`` (> n) fresh samples, and a certificate is *violated*
when either estimate falls outside the interval certified at the clean image. With
probability >= 1 - alpha per certificate this cannot happen for the population
median, so violations must be rare (about alpha * certificates, up to the
estimation error of the n_check median). The *tightness* rows give, per image, the
larger of the two sides' tightness ratios (:class:`certiqa.tightness.TightnessResult`):
the attacked median's progress towards a bound over that side's certified half-width;
1 would mean the attack reached the edge of the certificate.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import kornia
import torch
from torch import nn
from tqdm.auto import tqdm

from statsmodels.stats.proportion import proportion_confint

from . import metrics, robustness
from .attacks import ExpectedScore, SmoothedPGDL2, SquareAttack, make_attack
from .defenses.purification import ExpectedPurifiedScore, Purified
from .model_evaluation import read_manifest
from .io import IMAGE_EXTENSIONS, read_image
from .loading import read_checkpoint
from .tightness import TightnessResult
from .smoothing import SmoothedIQA, certify_samples

__all__ = [
    "Defense",
    "ComparisonConfig",
    "ComparisonResult",
    "ComparisonImage",
    "load_comparison_images",
    "run_comparison",
    "summarize",
    "format_markdown",
    "format_summary",
    "plot_comparison",
    "ATTACK_NORMS",
]

ATTACK_NORMS = {
    "FGSM": "linf", "IFGSM": "linf", "MIFGSM": "linf", "PGD": "linf", "Korhonen": "linf", "PGDL2": "l2", "Square": "linf",
}
ScoreFn = Callable[[torch.Tensor, int], torch.Tensor]

# rows of one image each: the tightness ratio of each side (results.csv only, not the markdown table)
PER_IMAGE_FAMILY = "tightness per image"


@dataclass
class Defense:
    """A column of the comparison: ``model`` (a plain or :class:`~certiqa.defenses.Purified`
    model) or ``smoothed`` (exactly one of the two)."""

    name: str
    model: nn.Module | None = None
    smoothed: SmoothedIQA | None = None

    def __post_init__(self) -> None:
        if (self.model is None) == (self.smoothed is None):
            raise ValueError(f"defense {self.name!r}: give exactly one of model= or smoothed=.")


@dataclass
class ComparisonConfig:
    """Settings; the defaults are the documented CPU setting (``full()`` for a GPU).

    ``n``: samples for the certificates; ``n_eval``: samples of the smoothed median in
    the attack rows (and per Square query on smoothed models); ``n_check``: samples
    re-estimating the attacked median for soundness and tightness (must exceed ``n``);
    ``check_images``: the soundness and tightness rows use the first this many images
    (None: all); ``steps``: steps of the iterative white-box attacks; ``eot_samples``:
    draws per white-box step on random purifications and smoothed models;
    ``queries``: model evaluations per image and budget of the Square attack, run at
    the l-inf ``square_budgets``, and on smoothed columns only with ``square_smoothed``
    (each query there costs ``n_eval`` samples); ``transfer_attacks``: the attacks whose
    adversarial images, made against the first column, are scored on every other
    column; ``fidelity_draws``: draws of a random purification or of the smoothing
    noise for PSNR / SSIM; ``strong_smoothed_attack``: the soundness and tightness rows
    attack with :meth:`certiqa.attacks.SmoothedPGDL2.strong` instead of its cheap
    default."""

    sigma: float = 0.12
    n: int = 100
    n_eval: int = 16
    n_check: int = 200
    check_images: int | None = 12
    alpha: float = 0.01
    linf_budgets: tuple[float, ...] = (2 / 255, 4 / 255, 8 / 255)
    l2_budgets: tuple[float, ...] = (0.1, 0.25, 0.5)
    attacks: tuple[str, ...] = ("PGD", "PGDL2", "Square")
    transfer_attacks: tuple[str, ...] = ("PGD", "PGDL2")
    steps: int = 4
    eot_samples: int = 2
    queries: int = 100
    square_budgets: tuple[float, ...] = (8 / 255,)
    square_smoothed: bool = False
    fidelity_draws: int = 4
    batch_size: int = 50
    strong_smoothed_attack: bool = False
    seed: int = 0

    @classmethod
    def full(cls) -> "ComparisonConfig":
        """The GPU setting: every attack, more samples, steps and queries."""
        return cls(
            n=10_000, n_eval=1000, n_check=50_000, check_images=None, alpha=0.001, attacks=tuple(ATTACK_NORMS),
            steps=20, eot_samples=16, queries=1000, square_budgets=(2 / 255, 4 / 255, 8 / 255), square_smoothed=True,
            fidelity_draws=16, batch_size=500, strong_smoothed_attack=True,
        )

    def check(self) -> None:
        for name in ("n", "n_eval", "n_check", "steps", "eot_samples", "fidelity_draws", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
        if isinstance(self.queries, bool) or not isinstance(self.queries, int) or self.queries < 2:
            raise ValueError(f"queries must be an integer >= 2 (the clean score and one proposal), got {self.queries!r}.")
        if self.check_images is not None and (isinstance(self.check_images, bool) or not isinstance(
                self.check_images, int) or self.check_images < 1):
            raise ValueError(f"check_images must be None (all) or an integer >= 1, got {self.check_images!r}.")
        if "Square" in self.attacks and not self.square_budgets:
            raise ValueError("the Square attack needs at least one l-inf budget in square_budgets.")
        if self.n_check <= self.n:
            raise ValueError(f"n_check ({self.n_check}) must exceed n ({self.n}) for the soundness check.")
        unknown = [a for a in (*self.attacks, *self.transfer_attacks) if a not in ATTACK_NORMS]
        if unknown:
            raise ValueError(f"unknown attacks {unknown}; choose from {sorted(ATTACK_NORMS)}.")
        missing = [a for a in self.transfer_attacks if a not in self.attacks]
        if missing:
            raise ValueError(f"transfer_attacks {missing} are not in attacks {list(self.attacks)}; add them there.")
        if not 0 < self.alpha < 1 or self.sigma <= 0:
            raise ValueError(f"need 0 < alpha < 1 and sigma > 0, got alpha={self.alpha}, sigma={self.sigma}.")


@dataclass(frozen=True)
class ComparisonImage:
    """An image (3, H, W) in [0, 1] with an optional human score normalised to [0, 1], higher = better."""

    name: str
    image: torch.Tensor
    human: float | None = None


@dataclass
class ComparisonResult:
    """``rows``: one dict per (metric, defense): family, metric, budget, defense, value.

    ``family`` groups rows: clean, fidelity, attack, transfer, certified, soundness,
    tightness, smoothed; ``budget`` is the attack or certificate budget label ('' when none)."""

    defenses: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, metric: str, defense: str, value: Any, *, family: str, budget: str = "") -> None:
        self.rows.append({"family": family, "metric": metric, "budget": budget, "defense": defense, "value": value})

    def value(self, metric: str, defense: str) -> Any:
        for row in self.rows:
            if row["metric"] == metric and row["defense"] == defense:
                return row["value"]
        raise KeyError(f"no row {metric!r} for defense {defense!r}")

    def write_csv(self, path: str | Path) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["family", "metric", "budget", "defense", "value"])
            writer.writeheader()
            writer.writerows(self.rows)


def load_comparison_images(data: str | Path, count: int | None = None, resize: int | None = 96) -> list[ComparisonImage]:
    """The images of the shared data set (all of them, or the first ``count``): labelled ones
    first (their human scores normalised to [0, 1], higher = better), then distorted,
    reference and ladder images, in manifest order; shorter side resized to ``resize``."""
    data = Path(data)
    rows = [r for r in read_manifest(data, scored_only=False) if r.file.lower().endswith(IMAGE_EXTENSIONS)]
    order = ("images/labelled/", "images/distorted/", "images/reference/", "images/ladders/")
    chosen = [r for prefix in order for r in rows if r.file.startswith(prefix)]
    if count is not None:
        if count > len(chosen):
            raise ValueError(f"asked for {count} images but {data / 'manifest.csv'} lists {len(chosen)}.")
        chosen = chosen[:count]
    return [
        ComparisonImage(
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


def _attack_label(attack: str, config: ComparisonConfig) -> str:
    return f"Square ({config.queries} queries)" if attack == "Square" else attack


def _with_n(smoothed: SmoothedIQA, n: int, seed: int) -> SmoothedIQA:
    return SmoothedIQA(
        smoothed.model, smoothed.sigma, n=n, alpha=smoothed.alpha, batch_size=smoothed.batch_size,
        clip=smoothed.clip, denoiser=smoothed.denoiser, seed=seed,
    )


def _quality(scores: torch.Tensor, lower_better: bool) -> torch.Tensor:
    return -scores if lower_better else scores


def run_comparison(
    defenses: Sequence[Defense],
    images: Sequence[ComparisonImage],
    config: ComparisonConfig,
    *,
    score_range: tuple[float, float],
    lower_better: bool,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> ComparisonResult:
    """Run every attack, budget and (for smoothed defenses) certificate on every image.

    The first defense is the reference for the "vs base" rows and the source of the
    transferred adversarial images. Each image is processed on its own (sizes differ).
    Attacks push each score towards the farther end of ``score_range`` (the direction of
    the robustness score R).

    With ``checkpoint`` (a folder), each finished column is saved there (its rows,
    seconds and clean scores; for the first column also the adversarial images it
    transfers), atomically. With ``resume``, columns already saved there under the same
    setting (config, defenses, images, score range and direction) are loaded instead of
    recomputed, so a stopped run continues at the column it was in; a folder made with
    another setting is refused. Without ``resume`` an existing checkpoint is replaced.
    """
    config.check()
    if not defenses or not images:
        raise ValueError("run_comparison needs at least one defense and one image.")
    result = ComparisonResult([d.name for d in defenses])
    lo, hi = score_range
    human_idx = [i for i, im in enumerate(images) if im.human is not None]
    base_clean: torch.Tensor | None = None
    transferred: dict[tuple[str, float], list[torch.Tensor]] = {}
    store = _ColumnStore(checkpoint, config, defenses, images, score_range, lower_better, resume) if checkpoint else None
    for column, defense in enumerate(defenses):
        saved = store.load(column) if store is not None else None
        if saved is not None:
            result.rows.extend(saved["rows"])
            result.seconds[defense.name] = saved["seconds"]
            base_clean = saved["clean"] if base_clean is None else base_clean
            if column == 0:
                device = images[0].image.device
                transferred = {(a, float(e)): [x.to(device) for x in xs] for a, e, xs in saved["transferred"]}
            continue
        first_row = len(result.rows)
        budgets = _attack_budgets(defense, config)
        start = time.perf_counter()
        score = _scorer(defense, config)
        clean = torch.cat([score(im.image[None], i) for i, im in enumerate(images)])
        if base_clean is None:
            base_clean = clean
        _clean_rows(result, defense.name, clean, base_clean, images, human_idx, lower_better)
        _fidelity_rows(result, defense, images, config)
        directions = ["up" if hi - float(c) >= float(c) - lo else "down" for c in clean]
        bar = tqdm(total=len(budgets) * len(images), desc=f"attacks on {defense.name}", disable=not progress)
        for attack_name, eps in budgets:
            attacked = []
            for i, (im, direction) in enumerate(zip(images, directions)):
                x_adv = _attack(defense, attack_name, eps, direction, config, i)(im.image[None])
                if column == 0 and attack_name in config.transfer_attacks:
                    transferred.setdefault((attack_name, eps), []).append(x_adv)
                attacked.append(score(x_adv, i))
                bar.update(1)
            budget = _budget_label(ATTACK_NORMS[attack_name], eps)
            _change_rows(result, "attack", f"{_attack_label(attack_name, config)} {budget}", budget, defense.name,
                         clean, torch.cat(attacked), score_range)
        bar.close()
        if column > 0:
            for (attack_name, eps), adversarial in transferred.items():
                budget = _budget_label(ATTACK_NORMS[attack_name], eps)
                attacked_t = torch.cat([score(x, i) for i, x in enumerate(adversarial)])
                _change_rows(result, "transfer", f"transfer from {defenses[0].name}: {attack_name} {budget}", budget,
                             defense.name, clean, attacked_t, score_range)
        if defense.smoothed is not None:
            _certify_rows(result, defense, images, config, progress)
        result.seconds[defense.name] = time.perf_counter() - start
        if store is not None:
            store.save(column, result.rows[first_row:], result.seconds[defense.name], clean,
                       [(a, e, xs) for (a, e), xs in transferred.items()] if column == 0 else [])
    return result


class _ColumnStore:
    """One file per finished column under ``folder``, and the setting they belong to."""

    def __init__(self, folder: str | Path, config: ComparisonConfig, defenses: Sequence[Defense],
                 images: Sequence[ComparisonImage], score_range: tuple[float, float], lower_better: bool,
                 resume: bool) -> None:
        self.folder = Path(folder)
        setting = {"config": dataclasses.asdict(config), "defenses": [d.name for d in defenses],
                   "images": [[im.name, list(im.image.shape)] for im in images],
                   "score_range": list(score_range), "lower_better": bool(lower_better)}
        self.setting = json.loads(json.dumps(setting))  # tuples -> lists, as read back
        marker = self.folder / "setting.json"
        if resume and marker.is_file():
            saved = json.loads(marker.read_text())
            if saved != self.setting:
                differ = sorted(k for k in self.setting if saved.get(k) != self.setting[k])
                raise ValueError(f"{self.folder} holds columns of another setting ({', '.join(differ)} differ); "
                                 "run without --resume to start again, or choose another --out.")
        else:
            if self.folder.is_dir():
                for old in self.folder.glob("column-*.pt"):
                    old.unlink()
            self.folder.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps(self.setting, indent=1))

    def _path(self, column: int) -> Path:
        return self.folder / f"column-{column:02d}.pt"

    def load(self, column: int) -> dict[str, Any] | None:
        path = self._path(column)
        return read_checkpoint(path, "a comparison cache column") if path.is_file() else None

    def save(self, column: int, rows: list[dict[str, Any]], seconds: float, clean: torch.Tensor,
             transferred: list[tuple[str, float, list[torch.Tensor]]]) -> None:
        plain = [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()} for row in rows]
        record = {"rows": plain, "seconds": float(seconds), "clean": clean.detach().cpu(),
                  "transferred": [(a, float(e), [x.detach().cpu() for x in xs]) for a, e, xs in transferred]}
        tmp = self._path(column).with_suffix(".tmp")
        torch.save(record, tmp)
        os.replace(tmp, self._path(column))


def _attack_budgets(defense: Defense, config: ComparisonConfig) -> list[tuple[str, float]]:
    """(attack, eps) pairs run on this column."""
    pairs = []
    for attack in config.attacks:
        if attack == "Square":
            if defense.smoothed is None or config.square_smoothed:
                pairs += [(attack, eps) for eps in config.square_budgets]
        else:
            norm_budgets = config.linf_budgets if ATTACK_NORMS[attack] == "linf" else config.l2_budgets
            pairs += [(attack, eps) for eps in norm_budgets]
    return pairs


def _scorer(defense: Defense, config: ComparisonConfig) -> ScoreFn:
    """``score(x, i)``: the deployed score of image ``i`` (as ``x``, clean or attacked),
    deterministic: the smoothed median on seeded noise, or the (purified) model with a
    random purification drawing from seed ``seed + 2 i`` (:func:`_draw_seed`), so the
    clean and the attacked image of one index share their draw and images differ."""
    if defense.smoothed is not None:
        smoothed_eval = _with_n(defense.smoothed, config.n_eval, config.seed)
        return lambda x, index: smoothed_eval.predict(x).cpu()
    model = defense.model

    def score(x: torch.Tensor, index: int) -> torch.Tensor:
        if isinstance(model, Purified) and model.random:
            model.defense.manual_seed(_draw_seed(config, index, attacker=False))
        with torch.no_grad():
            return model.eval()(x).reshape(-1).cpu()

    return score


class _FreshNoiseMedian:
    """The smoothed median with fresh seeded noise at every call: what a black-box
    attacker querying a deployed smoothed model sees (seeds ``first_seed``, +1, ...)."""

    def __init__(self, smoothed: SmoothedIQA, n: int, first_seed: int) -> None:
        self.smoothed, self.n, self.next_seed = smoothed, n, first_seed
        for name in ("lower_better", "score_range"):
            if hasattr(smoothed.model, name):
                setattr(self, name, getattr(smoothed.model, name))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.next_seed += 1
        return _with_n(self.smoothed, self.n, self.next_seed - 1).predict(x).to(x.device)


def _draw_seed(config: ComparisonConfig, index: int, *, attacker: bool) -> int:
    """Seed of a random purification's draws for image ``index``: even for the scoring
    draw, odd for the attacker's stream, so the two never coincide."""
    return config.seed + 2 * index + int(attacker)


def _attack(
    defense: Defense, attack_name: str, eps: float, direction: str, config: ComparisonConfig, index: int
) -> Callable:
    """The adaptive attack on image ``index`` of one defense: BPDA / EOT through
    purifications, EOT through smoothing noise and denoiser; Square queries the deployed defense."""
    model = defense.model
    if isinstance(model, Purified) and model.random:
        model.defense.manual_seed(_draw_seed(config, index, attacker=True))
    if attack_name == "Square":
        oracle: Any = model
        if defense.smoothed is not None:
            oracle = _FreshNoiseMedian(defense.smoothed, config.n_eval, first_seed=config.seed + 1000)
        return SquareAttack(oracle, eps, queries=config.queries, direction=direction, seed=config.seed)
    if defense.smoothed is not None:
        smoothed = _with_n(defense.smoothed, config.n_eval, config.seed)
        target: Any = ExpectedScore(smoothed, config.eot_samples, seed=config.seed)
    elif isinstance(model, Purified) and model.random:
        target = ExpectedPurifiedScore(model, config.eot_samples)
    else:
        target = model
    kwargs: dict[str, Any] = {"direction": direction, "seed": config.seed}
    if attack_name != "FGSM":
        kwargs["steps"] = config.steps
    return make_attack(attack_name, target, eps, **kwargs)


def _change_rows(
    result: ComparisonResult, family: str, label: str, budget: str, name: str, clean: torch.Tensor,
    attacked: torch.Tensor, score_range: tuple[float, float],
) -> None:
    result.add(f"{label}: mean abs change", name, float(robustness.absolute_change(clean, attacked).mean()),
               family=family, budget=budget)
    result.add(f"{label}: R", name, robustness.robustness_score(clean, attacked, score_range), family=family, budget=budget)


def _clean_rows(
    result: ComparisonResult,
    name: str,
    clean: torch.Tensor,
    base_clean: torch.Tensor,
    images: Sequence[ComparisonImage],
    human_idx: list[int],
    lower_better: bool,
) -> None:
    if len(human_idx) >= 3:
        q = _quality(clean[human_idx], lower_better)
        h = torch.tensor([images[i].human for i in human_idx])
        result.add(f"clean SROCC vs human ({len(human_idx)} img)", name, metrics.srocc(q, h), family="clean")
        result.add(f"clean PLCC vs human ({len(human_idx)} img)", name, metrics.plcc(q, h, mapping="none"), family="clean")
    if len(images) >= 3:
        result.add(f"clean SROCC vs base ({len(images)} img)", name, metrics.srocc(clean, base_clean), family="clean")
        result.add(f"clean PLCC vs base ({len(images)} img)", name, metrics.plcc(clean, base_clean, mapping="none"),
                   family="clean")
    result.add("clean score shift vs base: mean abs", name, float((clean - base_clean).abs().mean()), family="fidelity")


def _seen_images(defense: Defense, x: torch.Tensor, config: ComparisonConfig, index: int) -> list[torch.Tensor]:
    """The images (1, C, H, W) the model sees for image ``index`` (as ``x``): one per draw
    for random purifications (the first is the scoring draw) and smoothing, ``x`` itself
    for a plain model."""
    model = defense.model
    with torch.no_grad():
        if defense.smoothed is not None:
            smoothed = defense.smoothed
            device = smoothed.device_for(x)
            generator = torch.Generator(device=device).manual_seed(config.seed)
            seen = []
            for _ in range(config.fidelity_draws):
                noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
                if isinstance(smoothed.denoiser, nn.Module):
                    smoothed.denoiser.eval()
                seen.append(smoothed.noisy(x.to(device), noise).to(x.device))
            return seen
        if isinstance(model, Purified):
            if not model.random:
                return [model.defense(x)]
            model.defense.manual_seed(_draw_seed(config, index, attacker=False))
            return [model.defense(x) for _ in range(config.fidelity_draws)]
        return [x]


def _fidelity_rows(
    result: ComparisonResult, defense: Defense, images: Sequence[ComparisonImage], config: ComparisonConfig
) -> None:
    """PSNR (dB, of the mean squared error over draws and images; inf for unchanged images)
    and SSIM (11x11 Gaussian window, mean over draws and images) of the seen image
    against the clean one."""
    squared_errors, ssim = [], []
    for i, im in enumerate(images):
        x = im.image[None]
        for seen in _seen_images(defense, x, config, i):
            squared_errors.append(float((seen - x).pow(2).mean()))
            ssim.append(float(kornia.metrics.ssim(seen, x, 11).mean()))
    mse = sum(squared_errors) / len(squared_errors)
    result.add("seen image vs clean: PSNR (dB)", defense.name, -10 * math.log10(mse) if mse > 0 else math.inf,
               family="fidelity")
    result.add("seen image vs clean: SSIM", defense.name, sum(ssim) / len(ssim), family="fidelity")


def _adaptive_smoothed_attack(smoothed: SmoothedIQA, eps: float, direction: str, config: ComparisonConfig) -> Callable:
    """The adaptive l2 attack on a smoothed model used by the soundness and tightness rows: the
    median attack (:class:`~certiqa.attacks.SmoothedPGDL2`), its strong setting with ``--full``."""
    make = SmoothedPGDL2.strong if config.strong_smoothed_attack else SmoothedPGDL2
    return make(smoothed, eps, direction=direction, seed=config.seed)


def _certify_rows(
    result: ComparisonResult,
    defense: Defense,
    images: Sequence[ComparisonImage],
    config: ComparisonConfig,
    progress: bool,
) -> None:
    """Certified widths at every l2 budget (all images), the soundness counts of those
    certificates and the tightness of the adaptive attack against them (the first
    ``config.check_images`` images)."""
    smoothed = _with_n(defense.smoothed, config.n, config.seed + 1)
    checker = _with_n(defense.smoothed, config.n_check, config.seed + 2)
    samples = torch.stack([smoothed.sample(im.image[None])[0] for im in images])
    checked = images[: config.check_images]
    bar = tqdm(total=len(config.l2_budgets) * len(checked), desc=f"soundness of {defense.name}", disable=not progress)
    for eps in config.l2_budgets:
        cert = certify_samples(samples, eps, smoothed.sigma, config.alpha)
        label = _budget_label("l2", eps)
        if not bool(cert.certified.any()):
            result.add(f"certified {label}: width (certified/images)", defense.name, f"none/{len(images)}",
                       family="certified", budget=label)
            result.add(f"soundness {label}: violations/certificates", defense.name, "n/a", family="soundness", budget=label)
            result.add(f"tightness {label}: attacked median shift / certified half-width", defense.name, "n/a",
                       family="tightness", budget=label)
            bar.update(len(checked))
            continue
        violations = 0
        ratios = []
        for i, im in enumerate(checked):
            if not bool(cert.certified[i]):
                bar.update(1)
                continue
            moved = torch.stack([
                checker.predict(_adaptive_smoothed_attack(smoothed, eps, direction, config)(im.image[None])).cpu()[0]
                for direction in ("up", "down")
            ])
            violations += int(not bool(((cert.lower[i] <= moved) & (moved <= cert.upper[i])).all()))
            sides = TightnessResult(float(cert.median[i]), float(cert.lower[i]), float(cert.upper[i]),
                                    float(moved[0]), float(moved[1]))
            ratios.append(sides.ratio)
            result.add(f"tightness {label}, {im.name}: up / down", defense.name,
                       f"{sides.ratio_up:.3g} / {sides.ratio_down:.3g}", family=PER_IMAGE_FAMILY, budget=label)
            bar.update(1)
        certified = int(cert.certified.sum())
        mean_width = float(cert.width[cert.certified].mean())
        result.add(f"certified {label}: width (certified/images)", defense.name,
                   f"{mean_width:.3g} ({certified}/{len(images)})", family="certified", budget=label)
        if not ratios:  # none of the checked images is certified at this eps
            result.add(f"soundness {label}: violations/certificates", defense.name, "n/a", family="soundness",
                       budget=label)
            result.add(f"tightness {label}: attacked median shift / certified half-width", defense.name, "n/a",
                       family="tightness", budget=label)
            continue
        ratio = torch.tensor(ratios)
        # exact (Clopper-Pearson) 95% upper bound on the violation rate, to read against alpha
        _, rate_hi = proportion_confint(violations, len(ratios), alpha=0.05, method="beta")
        result.add(
            f"soundness {label}: violations/certificates",
            defense.name,
            f"{violations}/{len(ratios)} (rate <= {rate_hi:.2g} at 95%; alpha={config.alpha:g})",
            family="soundness",
            budget=label,
        )
        result.add(f"tightness {label}: attacked median shift / certified half-width", defense.name,
                   f"{float(ratio.mean()):.3g} (max {float(ratio.max()):.3g}; {len(ratios)} img)",
                   family="tightness", budget=label)
    bar.close()
    result.add("smoothed median, mean over images (n)", defense.name, float(certify_samples(
        samples, 0.0, smoothed.sigma, config.alpha).median.mean()), family="smoothed")


def summarize(result: ComparisonResult) -> list[dict[str, Any]]:
    """One dict per defense ranking both objectives.

    ``worst_change``: mean over attack budgets of the largest mean |score change| among
    the attacks run at that budget (adaptive and transferred): objective 1, lower is
    better (``robustness_rank`` 1 = best). ``ssim`` / ``psnr``: the seen image against
    the clean one: objective 2, higher is better (``fidelity_rank`` by SSIM, then
    PSNR). ``clean_shift`` and ``srocc_vs_base`` show the accuracy cost (a constant
    model is perfectly robust). ``pareto``: no other defense is at least as good on both
    objectives and better on one."""
    rows = []
    for name in result.defenses:
        worst: dict[str, float] = {}
        for r in result.rows:
            if r["defense"] == name and r["family"] in ("attack", "transfer") and r["metric"].endswith("mean abs change"):
                worst[r["budget"]] = max(worst.get(r["budget"], -math.inf), float(r["value"]))
        cells = {r["metric"]: r["value"] for r in result.rows if r["defense"] == name}
        srocc = [v for k, v in cells.items() if k.startswith("clean SROCC vs base")]
        rows.append({
            "defense": name,
            "worst_change": sum(worst.values()) / len(worst) if worst else math.nan,
            "clean_shift": cells.get("clean score shift vs base: mean abs", math.nan),
            "srocc_vs_base": srocc[0] if srocc else math.nan,
            "psnr": cells.get("seen image vs clean: PSNR (dB)", math.nan),
            "ssim": cells.get("seen image vs clean: SSIM", math.nan),
        })
    by_robustness = sorted(rows, key=lambda r: r["worst_change"])
    by_fidelity = sorted(rows, key=lambda r: (-r["ssim"], -r["psnr"]))
    for row in rows:
        row["robustness_rank"] = 1 + by_robustness.index(row)
        row["fidelity_rank"] = 1 + by_fidelity.index(row)
        row["pareto"] = not any(
            o["worst_change"] <= row["worst_change"] and o["ssim"] >= row["ssim"]
            and (o["worst_change"] < row["worst_change"] or o["ssim"] > row["ssim"])
            for o in rows
        )
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}g}"
    return str(value)


def format_markdown(result: ComparisonResult, digits: int = 3) -> str:
    """A markdown table: one row per metric (first-seen order), one column per defense; '—' where not
    applicable. The per-image tightness rows are left to ``results.csv``."""
    metrics_order: list[str] = []
    for row in result.rows:
        if row["family"] != PER_IMAGE_FAMILY and row["metric"] not in metrics_order:
            metrics_order.append(row["metric"])
    cells = {(r["metric"], r["defense"]): r["value"] for r in result.rows}
    lines = ["| metric | " + " | ".join(result.defenses) + " |", "| --- |" + " --- |" * len(result.defenses)]
    for metric in metrics_order:
        lines.append(f"| {metric} | " + " | ".join(_fmt(cells.get((metric, d)), digits) for d in result.defenses) + " |")
    if result.seconds:
        lines.append("| seconds | " + " | ".join(f"{result.seconds.get(d, float('nan')):.0f}" for d in result.defenses) + " |")
    return "\n".join(lines)


def format_summary(result: ComparisonResult, digits: int = 3) -> str:
    """The ranking of :func:`summarize` as a markdown table, best robustness first."""
    header = ("| defense | worst-attack mean abs change | robustness rank | SSIM | PSNR (dB) | fidelity rank "
              "| clean shift vs base | clean SROCC vs base | Pareto |")
    lines = [header, "| --- |" + " --- |" * 8]
    for r in sorted(summarize(result), key=lambda r: r["robustness_rank"]):
        cells = [r["defense"], r["worst_change"], r["robustness_rank"], r["ssim"], r["psnr"], r["fidelity_rank"],
                 r["clean_shift"], r["srocc_vs_base"], r["pareto"]]
        lines.append("| " + " | ".join(_fmt(c, digits) for c in cells) + " |")
    return "\n".join(lines)


def plot_comparison(result: ComparisonResult, config: ComparisonConfig, path: str | Path) -> None:
    """Three panels: mean |score change| against budget for l-inf and l2 (the worst attack of
    that norm per budget, adaptive or transferred), one line per defense, and the two
    objectives (SSIM against worst-attack change). Needs matplotlib (``pip install certiqa[plot]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("plot_comparison needs matplotlib: pip install 'certiqa[plot]'.") from None
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    linf = sorted(set(config.linf_budgets) | (set(config.square_budgets) if "Square" in config.attacks else set()))
    for ax, norm, budgets in ((axes[0], "linf", linf), (axes[1], "l2", sorted(config.l2_budgets))):
        names = [a for a in config.attacks if ATTACK_NORMS[a] == norm]
        if not names:
            ax.set_visible(False)
            continue
        for defense in result.defenses:
            points = []
            for eps in budgets:
                label = _budget_label(norm, eps)
                changes = [float(r["value"]) for r in result.rows if r["defense"] == defense and r["budget"] == label
                           and r["family"] in ("attack", "transfer") and r["metric"].endswith("mean abs change")]
                if changes:
                    points.append((eps * 255 if norm == "linf" else eps, max(changes)))
            if points:
                ax.plot(*zip(*points), marker="o", label=defense)
        ax.set_xlabel("eps (x/255, l-inf)" if norm == "linf" else "eps (l2, [0,1] pixels)")
        ax.set_ylabel("mean |score change| (worst attack)")
        ax.set_yscale("log")
        ax.set_title(f"{norm} attacks ({', '.join(_attack_label(a, config) for a in names)})")
        ax.grid(alpha=0.3)
    next(ax for ax in axes if ax.get_visible()).legend(fontsize=7)
    for row in summarize(result):
        axes[2].scatter(row["ssim"], row["worst_change"])
        axes[2].annotate(row["defense"], (row["ssim"], row["worst_change"]), fontsize=7)
    axes[2].set_xlabel("SSIM of the seen image vs the clean one (higher: less degraded)")
    axes[2].set_ylabel("worst-attack mean |score change|, mean over budgets")
    axes[2].set_yscale("log")
    axes[2].set_title("the two objectives")
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
