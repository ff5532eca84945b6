"""Cost of certifying real NR-IQA models: ms per noisy 512x384 image, peak memory, and the
hours a 1000-image data set takes at n 1000; prints a Markdown table.

    PYTHONPATH=. python benchmarks/bench_models.py [--n 64] [--rounds 3] [--batch-size 32]
        [--size 512 384] [--device cpu|cuda] [--only NAME ...]

Models (each timed in a fresh process, so that one model's memory does not hide the next's):
  cnniqa              certiqa's CNNIQA architecture, randomly initialised (weights do not change speed)
  default+denoiser    the embedded default model behind the shipped denoiser for sigma 0.12
  pyiqa-cnniqa        pyiqa:cnniqa(pretrained=None)
  pyiqa-wadiqam_nr    pyiqa:wadiqam_nr(pretrained=False)
  pyiqa-musiq         pyiqa:musiq(pretrained=False)
  pyiqa-topiq_nr      pyiqa:topiq_nr(pretrained=False, backbone_pretrain=False)
  pyiqa-piqe          pyiqa:piqe
(the pyiqa rows need pyiqa installed; they are reported as skipped otherwise).

Per model: one warm-up ``SmoothedIQA.sample`` of --batch-size noisy copies, then --rounds
timed runs of --n noisy copies of one random image (sigma 0.12, fixed seed); ms per noisy
image is the median round's seconds / n. Peak memory is the rise of the process's peak
resident set (CPU; certiqa.memory.peak_bytes) or of torch.cuda.max_memory_allocated (CUDA)
over a timed run, beyond the loaded model. Hours for 1000 images at n 1000:
ms x 1000 x 1000 / 3.6e6 (noise, model calls and sorting; reading files not included).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

MODELS = {
    "cnniqa": ("certiqa.models:CNNIQA", None),
    "default+denoiser": ("default", 0.12),
    "pyiqa-cnniqa": ("pyiqa:cnniqa(pretrained=None)", None),
    "pyiqa-wadiqam_nr": ("pyiqa:wadiqam_nr(pretrained=False)", None),
    "pyiqa-musiq": ("pyiqa:musiq(pretrained=False)", None),
    "pyiqa-topiq_nr": ("pyiqa:topiq_nr(pretrained=False, backbone_pretrain=False)", None),
    "pyiqa-piqe": ("pyiqa:piqe", None),
}
SIGMA = 0.12


def measure(name: str, args: argparse.Namespace) -> dict:
    """Time one model in this process (the child's side)."""
    from certiqa.denoisers import pretrained
    from certiqa.memory import peak_bytes
    from certiqa.models import load_model
    from certiqa.smoothing import SmoothedIQA

    spec, denoiser_sigma = MODELS[name]
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = load_model(spec).to(device)
    denoiser = pretrained(denoiser_sigma, device=device) if denoiser_sigma is not None else None
    width, height = args.size
    x = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)).to(device)
    smoothed = SmoothedIQA(model, SIGMA, n=args.n, batch_size=args.batch_size, seed=0, denoiser=denoiser,
                           max_memory_bytes=1 << 50)  # time the batch asked for, not one the probe lowers
    smoothed.sample(x, n=args.batch_size)  # warm-up
    seconds, peaks = [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        peaks.append(peak_bytes(lambda: smoothed.sample(x), device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    ms = 1000 * statistics.median(seconds) / args.n
    peak = max(p for p in peaks if p is not None) if any(p is not None for p in peaks) else None
    return {"model": name, "spec": spec + (f" + denoiser sigma {denoiser_sigma}" if denoiser_sigma else ""),
            "ms_per_image": ms, "peak_mb": None if peak is None else peak / 2**20,
            "hours_1000x1000": ms * 1000 * 1000 / 3.6e6, "rounds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="noisy copies per timed round (64)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per model; the median is kept (3)")
    parser.add_argument("--batch-size", type=int, default=32, help="noisy images per model call (32)")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 384), metavar=("W", "H"),
                        help="image size (512 384)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--only", nargs="+", choices=sorted(MODELS), default=None, help="time these models only")
    parser.add_argument("--one", choices=sorted(MODELS), help=argparse.SUPPRESS)  # the child's side
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args)))
        return 0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, image "
          f"{args.size[0]}x{args.size[1]}, sigma {SIGMA}, n {args.n} x {args.rounds} rounds, batch {args.batch_size}")
    print("| model | spec | ms / noisy image | peak memory (MiB) | hours, 1000 images at n 1000 |")
    print("|---|---|---:|---:|---:|")
    for name in args.only or list(MODELS):
        command = [sys.executable, __file__, "--one", name, "--n", str(args.n), "--rounds", str(args.rounds),
                   "--batch-size", str(args.batch_size), "--size", *map(str, args.size), "--device", args.device]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["failed"])[-1]
            print(f"| {name} | {MODELS[name][0]} | skipped: {last[:120]} | | |", flush=True)
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        peak = "n/a" if row["peak_mb"] is None else f"{row['peak_mb']:.0f}"
        print(f"| {name} | `{row['spec']}` | {row['ms_per_image']:.1f} | {peak} | {row['hours_1000x1000']:.1f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
