"""Cost per noisy 512x384 RGB image of CNNIQA's forward pass and of denoiser configurations.

    python benchmarks/bench_denoisers.py [--batch 4] [--rounds 5] [--threads 1] [--device cpu|cuda]
        [--config 'subpixel_dncnn {"scale": 2, "depth": 5, "features": 24}' ...]

Prints, per configuration, the parameters, GFLOP per image (2 x multiply-accumulates,
counted by torch.utils.flop_counter.FlopCounterMode on the meta device, so no compute
is spent on it), the median wall time per image over ``--rounds`` forward passes of a
batch of ``--batch`` noisy images (inference mode), and both as ratios to CNNIQA's own
forward pass on the same images. Every round times all configurations one after the
other, starting one further along the list each round; each time ratio is the median
of its per-round ratios (shared machines drift within minutes). Weights do not change
speed, so the networks are randomly initialised.

Inside smoothing every noisy copy goes through denoiser + model, so the cost of a
denoised sample is (1 + ratio) CNNIQA forward passes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from certiqa.denoisers.nets import ARCHITECTURES  # noqa: E402
from certiqa.options import add_model_arguments, load_model_from_args, model_spec  # noqa: E402

HEIGHT, WIDTH = 384, 512

DEFAULT_CONFIGS = [
    ("dncnn", {"depth": 17, "features": 64, "batch_norm": True}),  # the paper's DnCNN-S
    ("dncnn", {"depth": 6, "features": 24, "batch_norm": False}),  # the default model's shipped denoisers
    ("unet", {"features": 16, "levels": 2}),
    ("subpixel_dncnn", {"scale": 2, "depth": 5, "features": 24}),
    ("subpixel_dncnn", {"scale": 2, "depth": 8, "features": 32, "separable": True}),
    ("subpixel_dncnn", {"scale": 4, "depth": 4, "features": 64}),
    ("subpixel_dncnn", {"scale": 4, "depth": 6, "features": 48}),
    ("subpixel_dncnn", {"scale": 4, "depth": 10, "features": 96, "separable": True}),
]


def gflop(module: nn.Module, shape: tuple[int, ...], device: str = "meta") -> float:
    """GFLOP (2 x MACs of convolutions and matrix products) of one forward pass (on the meta
    device unless ``device`` says otherwise: a loaded model runs one real pass)."""
    module = module.to(device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(torch.rand(shape, device=device) if device != "meta" else torch.empty(shape, device="meta"))
    return counter.get_total_flops() / 1e9


def label(arch: str, config: dict) -> str:
    return arch + " " + ",".join(f"{k}={v}" for k, v in config.items())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=4, help="noisy images per timed forward pass")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    add_model_arguments(p, default="certiqa.models:CNNIQA", denoiser=False)  # the model the ratios refer to
    p.add_argument("--config", action="append", default=[], metavar="'ARCH JSON'",
                   help="a denoiser to measure, e.g. 'subpixel_dncnn {\"scale\": 4}' (default: a built-in list)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    configs = DEFAULT_CONFIGS
    if args.config:
        configs = []
        for item in args.config:
            arch, _, text = item.partition(" ")
            if arch not in ARCHITECTURES:
                raise SystemExit(f"bench_denoisers.py: error: unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}.")
            configs.append((arch, json.loads(text or "{}")))
    shape = (1, 3, HEIGHT, WIDTH)
    model = load_model_from_args(args).eval()
    reference = f"{model_spec(args)} forward pass"
    denoisers = [(label(arch, cfg), ARCHITECTURES[arch](**cfg)) for arch, cfg in configs]
    flops = {reference: gflop(model, shape, "cpu"), **{name: gflop(m, shape) for name, m in denoisers}}
    params = {name: sum(t.numel() for t in m.parameters()) for name, m in [(reference, model), *denoisers]}
    nets = [(reference, model.to(device))] + [(name, m.to_empty(device=device).eval()) for name, m in denoisers]
    for _, m in nets[1:]:  # to_empty leaves memory uninitialised: finite values for honest timing
        for t in m.parameters():
            nn.init.normal_(t, std=0.01)
    x = (torch.rand((args.batch,) + shape[1:], device=device) + 0.12 * torch.randn((args.batch,) + shape[1:], device=device)).clamp(0, 1)
    times: dict[str, list[float]] = {name: [] for name, _ in nets}
    with torch.inference_mode():
        for _, m in nets:  # warm-up
            m(x)
        for r in range(args.rounds):
            for name, m in nets[r % len(nets):] + nets[: r % len(nets)]:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                m(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append((time.perf_counter() - start) / args.batch)
    base = nets[0][0]
    print(f"per noisy {WIDTH}x{HEIGHT} RGB image; batch {args.batch}, {args.rounds} rounds, {args.threads} thread(s), {device}")
    print(f"reference model: {model_spec(args)}")
    print("| network | params | GFLOP | ms | GFLOP / model | time / model |")
    print("|---|---|---|---|---|---|")
    for name, _ in nets:
        ms = 1000 * statistics.median(times[name])
        ratio = statistics.median(t / b for t, b in zip(times[name], times[base]))
        print(f"| {name} | {params[name]:,} | {flops[name]:.3f} | {ms:.1f} | {flops[name] / flops[base]:.2f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
