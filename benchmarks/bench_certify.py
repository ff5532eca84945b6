"""Throughput of SmoothedIQA.certify for a model on 512x384 images; prints figures and ratios.

    python benchmarks/bench_certify.py [--images 2] [--n 1000] [--batch-size 32] [--rounds 4] [--device cpu|cuda]
        [--model SPEC]

Compares, for the same number of noisy images:
  certify   SmoothedIQA(model, 0.12, n).certify(x, 0.05) on a batch of images;
  forward   a bare forward pass over pre-drawn noisy images at the same batch size
            (certify / forward - 1 is the certification overhead: noise, bookkeeping, sorting);
  noise+fwd the same forward passes, each after drawing its batch of noise with one
            torch.randn call (a straightforward batched implementation);
  per-image the loop of the published research scripts: for each image, batches of 10
            copies, noise with randn_like, scores copied to the host per batch, numpy sort.
On the CPU the certify run also times its own model calls (a wrapper around the model),
so "inside certify" splits the same run into forward passes and everything else, which
no drift between runs can bias.
Weights do not change speed, so the default --model is a randomly initialised CNNIQA
(certiqa.models:CNNIQA, no data needed); any model spec can be timed instead.
Each round times the four one after the other, starting one further along the list each
round; the figures are medians over rounds, and each ratio is the median of its per-round
ratios (shared machines drift by 20 % within minutes, so ratios are only taken between
runs of the same round).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from certiqa import SmoothedIQA  # noqa: E402
from certiqa.options import add_model_arguments, load_model_from_args, model_spec, resolve_device  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


class TimedForward(torch.nn.Module):
    """Adds the wall time of each forward pass of ``model`` to ``seconds`` (CPU only: no sync)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seconds = 0.0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        scores = self.model(z)
        self.seconds += time.perf_counter() - start
        return scores


def per_image_loop(model, x: torch.Tensor, sigma: float, n: int, batch: int = 10) -> list[np.ndarray]:
    """The straightforward baseline: a Python loop per image and per batch of 10 noisy copies."""
    out = []
    with torch.no_grad():
        for image in x:
            scores = []
            for start in range(0, n, batch):
                copies = image.unsqueeze(0).repeat(min(batch, n - start), 1, 1, 1)
                noisy = (copies + torch.randn_like(copies) * sigma).clamp(0, 1)
                scores.append(model(noisy).cpu().numpy())
            out.append(np.sort(np.concatenate(scores)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    add_model_arguments(parser, default="certiqa.models:CNNIQA", denoiser=False)
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = load_model_from_args(args).to(device)
    x = torch.rand(args.images, 3, 384, 512, device=device)
    total = args.images * args.n
    timed_model = TimedForward(model)
    smoothed = SmoothedIQA(timed_model if device.type == "cpu" else model, 0.12, n=args.n,
                           batch_size=args.batch_size, seed=0)
    smoothed.certify(x[:1], 0.05)  # warm-up (allocator, kernels)
    noisy = (x[:1].expand(args.batch_size, -1, -1, -1) + 0.12 * torch.randn(args.batch_size, 3, 384, 512,
             device=device)).clamp(0, 1)
    generator = torch.Generator(device=device).manual_seed(0)

    def bare() -> None:
        with torch.inference_mode():
            for start in range(0, total, args.batch_size):
                model(noisy[: min(args.batch_size, total - start)])

    def noise_and_forward() -> None:
        with torch.inference_mode():
            for start in range(0, total, args.batch_size):
                rows = min(args.batch_size, total - start)
                z = torch.randn((rows, 3, 384, 512), generator=generator, device=device).mul_(0.12)
                model(z.add_(x[start // args.n]).clamp_(0, 1))

    runs = {
        "certify": lambda: smoothed.certify(x, 0.05),
        "bare forward": bare,
        "noise + forward": noise_and_forward,
        "per-image loop/10": lambda: per_image_loop(model, x, 0.12, args.n),
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    inside: list[float] = []  # certify time / its own forward time, per round (CPU)
    names = list(runs)
    for round_ in range(args.rounds):
        for name in names[round_ % len(names):] + names[: round_ % len(names)]:  # rotate the order
            fn = runs[name]
            timed_model.seconds = 0.0
            times[name].append(timed(fn, device))
            if name == "certify" and device.type == "cpu":
                inside.append(times[name][-1] / timed_model.seconds)

    def ratio(a: str, b: str) -> tuple[float, float, float]:
        r = [ta / tb for ta, tb in zip(times[a], times[b])]
        return float(np.median(r)), min(r), max(r)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{model_spec(args)} 512x384, n={args.n}, {args.images} image(s), batch {args.batch_size}, {name}, "
          f"median of {args.rounds} round(s)")
    for label, ts in times.items():
        t = float(np.median(ts))
        print(f"  {label:18s} {t:8.2f} s  {args.images / t:8.3f} images/s  {total / t:8.1f} noisy images/s")
    if inside:
        mid = float(np.median(inside))
        per_image = float(np.median(times["certify"])) * (1 - 1 / mid) / total * 1e3
        print(f"  inside certify: everything but the forward passes adds {100 * (mid - 1):+.1f}% "
              f"(rounds {100 * (min(inside) - 1):+.1f}% .. {100 * (max(inside) - 1):+.1f}%), "
              f"{per_image:.2f} ms per noisy image")
    for label, (a, b), fmt in [
        ("certification overhead (certify / bare forward - 1)", ("certify", "bare forward"), "pct"),
        ("against one-generator noise (certify / noise + forward - 1)", ("certify", "noise + forward"), "pct"),
        ("speed-up over the per-image loop (loop / certify)", ("per-image loop/10", "certify"), "x"),
    ]:
        mid, lo, hi = ratio(a, b)
        if fmt == "pct":
            print(f"  {label}: {100 * (mid - 1):+.1f}% (rounds {100 * (lo - 1):+.1f}% .. {100 * (hi - 1):+.1f}%)")
        else:
            print(f"  {label}: {mid:.2f}x (rounds {lo:.2f}x .. {hi:.2f}x)")


if __name__ == "__main__":
    main()
