"""Speed levers of certification against the fp32 baseline, A/B interleaved; prints figures and ratios.

    python benchmarks/bench_levers.py [--model default|cnniqa] [--size 384 512] [--n 256] [--batch-size 32]
        [--reps 5] [--levers bf16 fp16 channels_last compile ...] [--device cpu|cuda] [--threads T]

What is timed: ``SmoothedIQA(model, 0.12, n, batch_size, denoiser, seed=0).sample(x)`` on one
random image of ``--size`` (speed does not depend on the pixels): noise, denoiser (``default``:
the shipped one at sigma 0.12), model, sorting. ``cnniqa`` is a randomly initialised CNNIQA
(weights do not change speed) without a denoiser. The levers:

  bf16, fp16       ``precision=``: model and denoiser under torch.autocast;
  channels_last    model and denoiser in channels-last memory format, each batch converted
                   on the way in (SmoothedIQA's noise buffer is NCHW);
  compile          ``torch.compile`` of model and denoiser (its compile time is reported
                   apart, as the first call's extra time);
  compile+bf16     both;
  cuda_graphs      (CUDA only) ``torch.compile(mode="reduce-overhead")``, which replays CUDA
                   graphs for the fixed batch shape (n is rounded to a multiple of the batch).

Each repetition runs the baseline and every lever once, in an order rotated by one each
repetition, so that load and drift reach every side alike; a lever's figure is the median
over repetitions of (its time / the baseline's time in the same repetition). "max |dmedian|"
is the largest change of the smoothed median against fp32 (same seed and batch: the same
noise): how far the lever changes the function computed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

import torch
from torch import nn

from certiqa import SmoothedIQA
from certiqa.denoisers import pretrained
from certiqa.models import load_model

SIGMA = 0.12
LEVERS = ("bf16", "fp16", "channels_last", "compile", "compile+bf16", "cuda_graphs")


class ChannelsLast(nn.Module):
    """``module`` in channels-last format, fed each batch converted to it."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module.to(memory_format=torch.channels_last)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.module(z.contiguous(memory_format=torch.channels_last))


def build(lever: str, model: nn.Module, denoiser: nn.Module | None, args: argparse.Namespace) -> SmoothedIQA:
    """The smoothed model of one lever (``fp32``: the baseline)."""
    precision = {"bf16": "bf16", "fp16": "fp16", "compile+bf16": "bf16"}.get(lever, "fp32")
    wrap: Callable[[nn.Module], Any] = lambda m: m  # noqa: E731
    if lever == "channels_last":
        wrap = ChannelsLast
    elif lever in ("compile", "compile+bf16"):
        wrap = torch.compile
    elif lever == "cuda_graphs":
        wrap = lambda m: torch.compile(m, mode="reduce-overhead")  # noqa: E731
    return SmoothedIQA(wrap(model), SIGMA, n=args.n, batch_size=args.batch_size, seed=0,
                       denoiser=wrap(denoiser) if denoiser is not None else None, precision=precision)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    value = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("default", "cnniqa"), default="default")
    parser.add_argument("--size", type=int, nargs=2, default=(384, 512), metavar=("H", "W"))
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--levers", nargs="+", choices=LEVERS, default=None,
                        help="default: all that apply to the device (cuda_graphs on CUDA only)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    args.n = max(args.batch_size, args.n // args.batch_size * args.batch_size)  # fixed batch shapes throughout
    levers = args.levers or [lever for lever in LEVERS if lever != "cuda_graphs" or device.type == "cuda"]
    if "cuda_graphs" in levers and device.type != "cuda":
        raise SystemExit("bench_levers: error: cuda_graphs needs --device cuda.")
    if args.model == "default":
        model, denoiser = load_model("default").to(device), pretrained(SIGMA).to(device)
    else:
        torch.manual_seed(0)
        model, denoiser = load_model("certiqa.models:CNNIQA").to(device), None
    x = torch.rand((1, 3, *args.size), generator=torch.Generator().manual_seed(0)).to(device)
    names = ["fp32", *levers]
    smoothed: dict[str, SmoothedIQA] = {}
    first: dict[str, float] = {}
    medians: dict[str, float] = {}
    for name in names:  # warm-up: one full call each (compilation, kernel selection, allocator)
        try:
            smoothed[name] = build(name, model, denoiser, args)
            first[name], samples = _timed(lambda: smoothed[name].sample(x), device)
            medians[name] = float(samples[0, (args.n + 1) // 2 - 1])
        except Exception as err:  # a lever that does not run here is a finding, not a crash
            print(f"  {name}: does not run here ({type(err).__name__}: {str(err).splitlines()[0][:120]})")
            smoothed.pop(name, None)
    names = [name for name in names if name in smoothed]
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(args.reps):
        order = names[rep % len(names):] + names[: rep % len(names)]
        for name in order:
            times[name].append(_timed(lambda: smoothed[name].sample(x), device)[0])
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.model}{' + denoiser' if denoiser is not None else ''}, {args.size[0]}x{args.size[1]}, n={args.n}, "
          f"batch {args.batch_size}, {where}, torch {torch.__version__}, {args.reps} interleaved repetition(s)")
    print(f"  {'lever':14s} {'median s':>9s} {'noisy/s':>9s} {'time/fp32':>10s} {'range':>15s} {'first call s':>13s} "
          f"{'max |dmedian|':>14s}")
    for name in names:
        ratios = [t / b for t, b in zip(times[name], times["fp32"])]
        median_s = statistics.median(times[name])
        print(f"  {name:14s} {median_s:9.3f} {args.n / median_s:9.1f} {statistics.median(ratios):10.3f} "
              f"{min(ratios):7.3f}..{max(ratios):<7.3f} {first[name]:13.2f} {abs(medians[name] - medians['fp32']):14.3g}")


if __name__ == "__main__":
    main()
