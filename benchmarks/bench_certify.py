"""Throughput of SmoothedIQA.certify for CNNIQA on 512x384 images; prints figures and ratios.

    python benchmarks/bench_certify.py [--images 2] [--n 1000] [--batch-size 32] [--device cpu|cuda]

Compares, for the same number of noisy images:
  certify   SmoothedIQA(model, 0.12, n).certify(x, 0.05) on a batch of images;
  forward   a bare forward pass over pre-drawn noisy images at the same batch size
            (certify / forward - 1 is the certification overhead: noise, bookkeeping, sorting);
  noise+fwd the same forward passes, each after drawing its batch of Gaussian noise
            (certify / noise+fwd - 1 is what certiqa adds beyond the work smoothing needs);
  per-image the loop of the published research scripts: for each image, batches of 10
            copies, noise with randn_like, scores copied to the host per batch, numpy sort.
Weights do not change speed, so a randomly initialised CNNIQA is used (no data needed).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from certiqa import SmoothedIQA
from certiqa.models import CNNIQA


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


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
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = CNNIQA().to(device).eval()
    x = torch.rand(args.images, 3, 384, 512, device=device)
    total = args.images * args.n
    smoothed = SmoothedIQA(model, 0.12, n=args.n, batch_size=args.batch_size, seed=0)
    smoothed.certify(x[:1], 0.05)  # warm-up (allocator, kernels)

    t_certify = timed(lambda: smoothed.certify(x, 0.05), device)
    noisy = (x[:1].expand(args.batch_size, -1, -1, -1) + 0.12 * torch.randn(args.batch_size, 3, 384, 512,
             device=device)).clamp(0, 1)

    def bare() -> None:
        with torch.inference_mode():
            for start in range(0, total, args.batch_size):
                model(noisy[: min(args.batch_size, total - start)])

    t_forward = timed(bare, device)
    generator = torch.Generator(device=device).manual_seed(0)

    def noise_and_forward() -> None:
        with torch.inference_mode():
            for start in range(0, total, args.batch_size):
                rows = min(args.batch_size, total - start)
                torch.randn((rows, 3, 384, 512), generator=generator, device=device)
                model(noisy[:rows])

    t_noise_forward = timed(noise_and_forward, device)
    t_loop = timed(lambda: per_image_loop(model, x, 0.12, args.n), device)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"CNNIQA 512x384, n={args.n}, {args.images} image(s), batch {args.batch_size}, {name}")
    print(f"  certify            {t_certify:8.2f} s  {args.images / t_certify:8.3f} images/s  "
          f"{total / t_certify:8.1f} noisy images/s")
    print(f"  bare forward       {t_forward:8.2f} s  {total / t_forward:8.1f} noisy images/s")
    print(f"  noise + forward    {t_noise_forward:8.2f} s  {total / t_noise_forward:8.1f} noisy images/s")
    print(f"  per-image loop/10  {t_loop:8.2f} s  {args.images / t_loop:8.3f} images/s")
    print(f"  certification overhead (certify / bare forward - 1): {100 * (t_certify / t_forward - 1):+.1f}%")
    print(f"  beyond drawing the noise (certify / noise + forward - 1): {100 * (t_certify / t_noise_forward - 1):+.1f}%")
    print(f"  speed-up over the per-image loop: {t_loop / t_certify:.2f}x")


if __name__ == "__main__":
    main()
