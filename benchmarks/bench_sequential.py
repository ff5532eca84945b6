"""Sequential against fixed-n certification on the real images of ../shared/data; prints figures.

    python benchmarks/bench_sequential.py [--model SPEC] [--denoiser FILE|pretrained] [--images K] [--spaced K] [--resize S]
        [--threads T] [--n-max 1000] [--n0 64] [--sigma 0.12] [--eps 0.05] [--alpha 0.001]
        [--delta D] [--cache DIR] [--out CSV]

Full setting (about 93 x 1000 CNNIQA passes at full resolution, hours on a shared 2-core CPU):
    python benchmarks/bench_sequential.py --threads 2
Smoke setting:
    python benchmarks/bench_sequential.py --images 3 --resize 96 --threads 1

1. fixed n: every image is certified with ``SmoothedIQA(...).sample`` at n_max (one image per
   call, noise seed --seed). A model wrapper records the scores in draw order; they are saved
   per image under --cache with the seconds spent, so a killed run resumes where it stopped
   and a second run (e.g. another --delta) skips this part.
2. delta: unless --delta is given, each image needs d_i = max(median - lower, upper - median)
   of its fixed-n certificate (alpha on the certificate alone) to certify; delta is the
   midpoint of the ceil(m/2)-th and the next smallest d_i of the m images, so ceil(m/2)
   images certify at fixed n and no image sits exactly on delta.
3. replay: for each scheme of SCHEMES (alpha spending, futility test, n0, growth of the looks),
   ``certiqa.bounds.sequential_decisions`` on the recorded draws (look j reads the first n_j of
   them): each spending schedule with the "not certifiable" test, then equal spending with the
   "futile" tests (``futility="prediction"`` / ``"power"``, --futility-error), then "power-fine"
   (n0 32, growth 1.25, final spending, power test: the defaults, ``bounds.DEFAULT_SCHEME``) and
   "proof-fine" (the same looks with the proof test: ``certiqa certify --delta D --futility proof``).
4. live (unless --skip-live): ``SmoothedIQA.certify_sequential`` on every image with the same
   seed and the scheme --live-scheme (default "equal"), timed. With --batch-size dividing n0 and
   every look's increment, each look's extra samples fill the noise buffer in the same chunks as
   the fixed-n run, so the live run draws exactly the recorded prefix: its decisions and n_used
   must equal the replay (the mismatch count is printed; it should be 0). Otherwise the live run
   draws other noise (said so), and its figures are an independent run of the same procedure.

Figures: decisions of each procedure, mean and median samples per image, n_max / mean, and
how many images the two procedures decide differently (certified or not). --sweep adds a
table over deltas, n0 and spending schedules from the same recorded draws, and one over n0,
growth and spending for the power test at the headline delta.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from certiqa import SmoothedIQA, bounds  # noqa: E402
from certiqa.model_evaluation import evenly_spaced, read_manifest  # noqa: E402
from certiqa.io import read_image  # noqa: E402
from certiqa.options import add_model_arguments, load_denoiser_from_args, load_model_from_args, model_spec  # noqa: E402


# the replayed schemes: (name, alpha spending, futility test, n0 (None: --n0), growth of the looks); the
# doubling looks of the first ones, then "power-fine", the defaults of certify_sequential and
# `certiqa certify --delta` (bounds.DEFAULT_SCHEME, chosen on the 96 px draws), and the same looks
# with the proof test ("proof-fine", what `--futility proof` runs)
_FINE = bounds.DEFAULT_SCHEME
SCHEMES = [(s, s, "proof", None, 2.0) for s in bounds.SPENDING] + [
    ("prediction", "equal", "prediction", None, 2.0),
    ("power", "equal", "power", None, 2.0),
    ("power-fine", _FINE.spending, _FINE.futility, _FINE.n0, _FINE.growth),
    ("proof-fine", _FINE.spending, "proof", _FINE.n0, _FINE.growth),
]


class Recorder(torch.nn.Module):
    """The model, recording every score it returns, in call order."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.scores: list[torch.Tensor] = []

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        scores = self.model(z)
        self.scores.append(scores.detach().reshape(-1).clone())
        return scores


def build_parser() -> argparse.ArgumentParser:
    data = REPO.parent / "shared" / "data"
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(data), help="shared data folder with manifest.csv (default: %(default)s)")
    add_model_arguments(p, default=None, default_help="cnniqa:DATA/models/cnniqa-live.pt")
    p.add_argument("--images", type=int, default=None, help="only the first K images of the manifest")
    p.add_argument("--spaced", type=int, default=None, metavar="K",
                   help="only K images evenly spaced in the manifest (after --images)")
    p.add_argument("--resize", type=int, default=None, help="shorter side of every image (default: full size)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--sigma", type=float, default=0.12)
    p.add_argument("--eps", type=float, default=0.05)
    p.add_argument("--alpha", type=float, default=0.001)
    p.add_argument("--n-max", type=int, default=1000)
    p.add_argument("--n0", type=int, default=64)
    p.add_argument("--delta", type=float, default=None, help="default: the rule of step 2")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", default=None, help="where the fixed-n draws go (default: runs/bench_sequential/SETTING)")
    p.add_argument("--out", default=None, help="per-image CSV of both procedures")
    p.add_argument("--futility-error", type=float, default=bounds.DEFAULT_SCHEME.futility_error,
                   help="error of the prediction test, threshold of the power test (default: %(default)s)")
    p.add_argument("--sweep", action="store_true",
                   help="also a table over deltas (10 %% to 90 %% certified at fixed n), n0 and spending (replays)")
    p.add_argument("--live-scheme", choices=[name for name, *_ in SCHEMES], default="equal",
                   help="the scheme of the live run (default: %(default)s)")
    p.add_argument("--cached-only", action="store_true",
                   help="only the images (of those selected) whose fixed-n draws are already cached")
    p.add_argument("--skip-live", action="store_true",
                   help="only the cached fixed-n draws and the replays (e.g. to try another --delta)")
    return p


def setting_name(args: argparse.Namespace) -> str:
    size = "full" if args.resize is None else f"r{args.resize}"
    model = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(model_spec(args)).name)
    denoiser = "" if args.denoiser is None else "+" + re.sub(r"[^A-Za-z0-9_.-]", "_", Path(args.denoiser).name)
    return f"{model}{denoiser}_{size}_s{args.sigma:g}_n{args.n_max}_b{args.batch_size}_seed{args.seed}"


def cache_stem(cache: Path, index: int, file: str) -> Path:
    """Where the fixed-n draws of the image at ``index`` in the manifest are kept (``.npy``, ``.json``)."""
    return cache / f"{index:03d}_{re.sub(r'[^A-Za-z0-9_.-]', '_', file)}"


def fixed_draws(smoothed: SmoothedIQA, recorder: Recorder, files: list[str], indices: list[int],
                args: argparse.Namespace, cache: Path, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw-order scores (m, n_max) and seconds (m,) of the fixed-n run, from the cache where present
    (one file per image, named by its index in the manifest)."""
    cache.mkdir(parents=True, exist_ok=True)
    draws, seconds = [], []
    for i, file in zip(indices, files):
        stem = cache_stem(cache, i, file)
        if stem.with_suffix(".json").is_file():
            seconds.append(json.loads(stem.with_suffix(".json").read_text())["seconds"])
            draws.append(np.load(stem.with_suffix(".npy")))
            continue
        x = read_image(Path(args.data) / file, resize=args.resize, min_size=min_size).image[None]
        recorder.scores.clear()
        start = time.perf_counter()
        smoothed.sample(x, args.n_max)
        seconds.append(time.perf_counter() - start)
        draws.append(torch.cat(recorder.scores).double().cpu().numpy())
        np.save(stem.with_suffix(".npy"), draws[-1])
        stem.with_suffix(".json").write_text(json.dumps({"file": file, "seconds": seconds[-1]}))  # written last
        print(f"  fixed n {len(draws)}/{len(files)} {file}: {seconds[-1]:.1f} s", file=sys.stderr, flush=True)
    return np.stack(draws), np.array(seconds)


def delta_certifying(need: np.ndarray, k: int) -> float:
    """The midpoint of the needed deltas ranked k and k + 1 from the smallest (the largest for
    k = m): exactly k images certify at fixed n, none on the line."""
    ordered = np.sort(need)
    return float(ordered[k - 1] if k == len(ordered) else (ordered[k - 1] + ordered[k]) / 2)


def oracle_first_n(draws: np.ndarray, delta: float, args: argparse.Namespace) -> np.ndarray:
    """Per image, the smallest n <= n_max at which the fixed-n certificate at the *full* alpha,
    read from the first n draws, certifies within +-delta (n_max + 1 where none does). A look at
    alpha_j <= alpha reads ranks at least as far out, so no procedure built on these certificates
    certifies an image with fewer samples, whatever its looks and spending."""
    first = np.full(len(draws), args.n_max + 1)
    for n in range(1, args.n_max + 1):
        try:
            look = bounds.single_look(n, args.sigma, args.eps, args.alpha)
        except ValueError:  # n too small to certify anything at alpha
            continue
        certified = bounds.sequential_decisions(draws[:, :n], [look], delta).decision == bounds.CERTIFIED
        first[certified & (first > n)] = n
    return first


def sweep(draws: np.ndarray, need: np.ndarray, fixed_look: list[bounds.Look], args: argparse.Namespace) -> None:
    """Markdown table: n_max / mean samples and differing decisions, for deltas certifying 10 % to
    90 % of the images at fixed n, every scheme of SCHEMES at each n0 in (32, 64, 128) (at its own
    n0 where it fixes one; replays only)."""
    columns = [(name, n0, s, f, g) for name, s, f, fixed_n0, g in SCHEMES
               for n0 in ((32, 64, 128) if fixed_n0 is None else (fixed_n0,)) if n0 <= args.n_max]
    print("| delta certifies at fixed n | delta | " + " | ".join(f"n0 {n0} {name}" for name, n0, *_ in columns) + " |")
    print("|---" * (len(columns) + 2) + "|")
    for fraction in (0.1, 0.25, 0.5, 0.75, 0.9):
        k = min(max(1, round(fraction * len(need))), len(need))
        delta = delta_certifying(need, k)
        fixed = bounds.sequential_decisions(draws, fixed_look, delta).decision == bounds.CERTIFIED
        cells = []
        for _, n0, spending, futility, growth in columns:
            try:
                looks = bounds.sequential_looks(n0, args.n_max, args.sigma, args.eps, args.alpha, spending, futility,
                                                args.futility_error, growth)
            except ValueError:  # n0 too small for the first look's alpha
                cells.append("-")
                continue
            outcome = bounds.sequential_decisions(draws, looks, delta)
            differ = int(((outcome.decision == bounds.CERTIFIED) != fixed).sum())
            cells.append(f"{args.n_max / outcome.n_used.mean():.2f}x, {differ}")
        print(f"| {round(100 * fraction)} % ({int(fixed.sum())}) | {delta:.4g} | " + " | ".join(cells) + " |")


def growth_sweep(draws: np.ndarray, fixed_certified: np.ndarray, delta: float, args: argparse.Namespace) -> None:
    """Markdown table at the headline delta, the power futility test: n_max / mean samples and
    differing decisions for each n0 in (32, 64), growth of the looks and spending schedule."""
    spendings = ("equal", "final")
    print("| n0 | growth | looks | " + " | ".join(f"{s} spending" for s in spendings) + " |")
    print("|---" * (len(spendings) + 3) + "|")
    for n0 in (32, 64):
        for growth in (2.0, 1.5, 1.25):
            cells = []
            for spending in spendings:
                looks = bounds.sequential_looks(n0, args.n_max, args.sigma, args.eps, args.alpha, spending, "power",
                                                args.futility_error, growth)
                outcome = bounds.sequential_decisions(draws, looks, delta)
                differ = int(((outcome.decision == bounds.CERTIFIED) != fixed_certified).sum())
                cells.append(f"{args.n_max / outcome.n_used.mean():.2f}x, {differ}")
            print(f"| {n0} | {growth:g} | {len(looks)} | " + " | ".join(cells) + " |")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    data = Path(args.data)
    files = [row.file for row in read_manifest(data, scored_only=False) if row.file.startswith("images/")]
    files = files[: args.images] if args.images is not None else files
    indices = evenly_spaced(len(files), args.spaced)
    files = [files[i] for i in indices]
    if args.model is None and args.weights is None:
        args.model = f"cnniqa:{data / 'models' / 'cnniqa-live.pt'}"
    model, denoiser = load_model_from_args(args), load_denoiser_from_args(args)
    recorder = Recorder(model)
    smoothed = SmoothedIQA(recorder, args.sigma, n=args.n_max, alpha=args.alpha, batch_size=args.batch_size,
                           denoiser=denoiser, seed=args.seed)
    cache = Path(args.cache) if args.cache else REPO / "runs" / "bench_sequential" / setting_name(args)
    if args.cached_only:
        kept = [(i, f) for i, f in zip(indices, files) if cache_stem(cache, i, f).with_suffix(".json").is_file()]
        if not kept:
            raise SystemExit(f"--cached-only: no fixed-n draws of these images in {cache}")
        indices, files = [i for i, _ in kept], [f for _, f in kept]
    print(f"setting: {model_spec(args)}{'' if args.denoiser is None else ' + denoiser ' + args.denoiser}, "
          f"{len(files)} images{' evenly spaced in the manifest' if args.spaced else ''}"
          f"{' (those with cached draws)' if args.cached_only else ''}, "
          f"{'full size' if args.resize is None else f'shorter side {args.resize}'}, sigma {args.sigma}, "
          f"eps {args.eps}, alpha {args.alpha}, n0 {args.n0}, n_max {args.n_max}, batch {args.batch_size}, "
          f"seed {args.seed}, {torch.get_num_threads()} thread(s); cache {cache}")

    draws, fixed_seconds = fixed_draws(smoothed, recorder, files, indices, args, cache, model.min_size)
    fixed_look = [bounds.single_look(args.n_max, args.sigma, args.eps, args.alpha)]
    fixed = bounds.sequential_decisions(draws, fixed_look, 0.0)  # delta moves the decision, not the interval
    need = np.maximum(fixed.median - fixed.lower, fixed.upper - fixed.median)
    if args.delta is None:
        half = math.ceil(len(files) / 2)
        delta = delta_certifying(need, half)
        rule = f"midpoint of the needed deltas ranked {half} and {half + 1} from the smallest"
    else:
        delta, rule = args.delta, "given"
    fixed_certified = bounds.sequential_decisions(draws, fixed_look, delta).decision == bounds.CERTIFIED
    print(f"delta {delta:.6g} ({rule}); needed delta / delta over images: "
          + ", ".join(f"{q:g} quantile {v:.3g}" for q, v in zip((0, 0.1, 0.25, 0.5, 0.75, 0.9, 1),
                                                                 np.quantile(need / delta, (0, 0.1, 0.25, 0.5, 0.75, 0.9, 1)))))
    print(f"fixed n={args.n_max}: {int(fixed_certified.sum())}/{len(files)} certified, "
          f"{fixed_seconds.sum():.1f} s in all")

    replays = {}
    for name, spending, futility, n0, growth in SCHEMES:
        n0 = args.n0 if n0 is None else n0
        looks = bounds.sequential_looks(n0, args.n_max, args.sigma, args.eps, args.alpha, spending, futility,
                                        args.futility_error, growth)
        replays[name] = outcome = bounds.sequential_decisions(draws, looks, delta)
        certified = outcome.decision == bounds.CERTIFIED
        counts = ", ".join(f"{int((outcome.decision == d).sum())} {d}" for d in bounds.DECISIONS)
        mean = float(outcome.n_used.mean())
        print(f"sequential {name}: {spending} spending, futility {bounds.futility_setting(futility, args.futility_error)} "
              f"(looks {' '.join(str(look.n) for look in looks)}): {counts}; "
              f"samples per image mean {mean:.1f}, median {float(np.median(outcome.n_used)):g} "
              f"({args.n_max / mean:.2f}x fewer than fixed n); decisions differ from fixed n on "
              f"{int((certified != fixed_certified).sum())}/{len(files)} "
              f"({int((certified & ~fixed_certified).sum())} certified only sequentially, "
              f"{int((~certified & fixed_certified).sum())} only at fixed n)")
        stops = [", ".join(f"{int(((outcome.decision == d) & (outcome.n_used == look.n)).sum())}" for look in looks)
                 for d in bounds.DECISIONS]
        print(f"  images stopping at each look ({' '.join(str(look.n) for look in looks)}): "
              + "; ".join(f"{d} {counts}" for d, counts in zip(bounds.DECISIONS, stops)))
        floor = np.where(certified, outcome.n_used, n0).mean()
        print(f"  had every image it does not certify stopped at n0 (a perfect futility test): mean {floor:.1f} "
              f"({args.n_max / floor:.2f}x)")
        if futility != "proof":
            wrong = (outcome.decision == bounds.FUTILE) & fixed_certified
            bound = (f"at most {args.futility_error:g} per image by construction" if futility == "prediction"
                     else "no bound: an estimate")
            print(f"  futile where fixed n certifies: {int(wrong.sum())}/{len(files)} ({bound})")
        exact = bounds.certificate_miss_probability(looks, args.sigma, args.eps)
        union = np.sum([bounds.certificate_miss_probability([look], args.sigma, args.eps) for look in looks], axis=0)
        print(f"  probability that some look's certificate misses (exact, worst case over score distributions): "
              f"lower side {exact[0]:.3g}, upper {exact[1]:.3g}; summed over the looks (what the union bound "
              f"charges) {union[0]:.3g}, {union[1]:.3g}; allowed per side "
              f"{sum(look.alpha_certificate for look in looks) / 2:.3g}")

    first = np.where(fixed_certified, oracle_first_n(draws, delta, args), 0)
    print(f"oracle bound: a full-alpha certificate tried at every n, no price for looking, images not certified "
          f"at fixed n free: mean {first.mean():.1f} ({args.n_max / max(first.mean(), 1e-9):.2f}x); dropping the "
          f"{len(files) // 20} costliest (5 % may differ): {np.sort(first)[: len(files) - len(files) // 20].sum() / len(files):.1f}")

    if args.sweep:
        sweep(draws, need, fixed_look, args)
        growth_sweep(draws, fixed_certified, delta, args)

    _, spending, futility, n0, growth = next(entry for entry in SCHEMES if entry[0] == args.live_scheme)
    n0 = args.n0 if n0 is None else n0
    sizes = bounds.look_sizes(n0, args.n_max, growth)
    aligned = all(step % args.batch_size == 0 for step in np.diff((0, *sizes))[:-1])
    live_cache = cache / f"live_{args.live_scheme}"  # one file per image: a killed live run resumes
    mismatches, differ, live_seconds, live_passes, live = 0, 0, 0.0, 0, []
    for i, file in enumerate([] if args.skip_live else files):
        stored = live_cache / f"{indices[i]:03d}.json"
        if stored.is_file():
            record = json.loads(stored.read_text())
        else:
            x = read_image(data / file, resize=args.resize, min_size=model.min_size).image[None]
            recorder.scores.clear()
            start = time.perf_counter()
            result = smoothed.certify_sequential(x, args.eps, delta, n0=n0, n_max=args.n_max, spending=spending,
                                                 futility=futility, futility_error=args.futility_error, growth=growth)
            record = {"file": file, "decision": result.decision[0], "n_used": int(result.n_used[0]),
                      "seconds": time.perf_counter() - start, "passes": sum(len(s) for s in recorder.scores)}
            live_cache.mkdir(parents=True, exist_ok=True)
            stored.write_text(json.dumps(record))
        live_seconds += record["seconds"]
        live_passes += record["passes"]
        live.append(record)
        replay = replays[args.live_scheme]
        mismatches += record["decision"] != replay.decision[i] or record["n_used"] != replay.n_used[i]
        differ += (record["decision"] == bounds.CERTIFIED) != fixed_certified[i]
    if live:
        fixed_passes = len(files) * args.n_max
        same = ("draws exactly the recorded prefix" if aligned else
                f"draws other noise than the fixed-n run (look increments not multiples of batch {args.batch_size})")
        print(f"live certify_sequential ({args.live_scheme}; {same}): {mismatches} image(s) differ from the replay, "
              f"{differ} decide differently from fixed n; mean samples per image {live_passes / len(live):.1f}; "
              f"{live_passes} noisy images through the model against {fixed_passes} at fixed n "
              f"({fixed_passes / live_passes:.2f}x); {live_seconds:.1f} s against {fixed_seconds.sum():.1f} s "
              f"({1e3 * live_seconds / live_passes:.2f} against {1e3 * fixed_seconds.sum() / fixed_passes:.2f} ms "
              f"per noisy image: on a shared machine the two phases may run under different load)")

    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w") as fh:
            fh.write("file,need_delta,fixed_certified,fixed_lower,fixed_median,fixed_upper,"
                     + ",".join(f"{s}_decision,{s}_n_used" for s, *_ in SCHEMES) + ",live_decision,live_n_used\n")
            for i, file in enumerate(files):
                cells = [file, f"{need[i]:.6g}", str(bool(fixed_certified[i])), f"{fixed.lower[i]:.6g}",
                         f"{fixed.median[i]:.6g}", f"{fixed.upper[i]:.6g}"]
                cells += [f"{replays[s].decision[i]},{replays[s].n_used[i]}" for s, *_ in SCHEMES]
                cells += [f"{live[i]['decision']},{live[i]['n_used']}" if live else ","]
                fh.write(",".join(cells) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
