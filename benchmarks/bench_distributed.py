"""Images per second of one process with T threads against K processes (torchrun, gloo)
with T/K threads each, certifying the same images with the same engine; prints figures
and the ratio.

    python benchmarks/bench_distributed.py [--images 16] [--size 384 512] [--n 500] [--threads 2]
                                           [--processes 2] [--rounds 3]

The default model (CNNIQA), sigma 0.12, seed 0, eps 0.05, batch 32, on random RGB
images written to a temporary folder. Each configuration runs as its own command: one
``python benchmarks/bench_distributed.py --worker`` process with ``--threads`` threads,
and ``torchrun --nproc-per-node K`` of the same worker with ``threads / K`` threads
each. A worker loads the model, warms it up on one batch, waits for the other ranks, then times
``certiqa.runner.certify_paths`` (certification, part files and rank 0's merge: rank 0
finishes after every rank); "end to end" adds Python start-up and model loading.
Rounds alternate which configuration runs first; figures are medians over rounds,
the ratio the median of per-round ratios. The rows of the two configurations must be
identical (the noise of an image depends on the seed and the file only); the script
says whether they were.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from certiqa.distributed import join  # noqa: E402
from certiqa.io import load_image  # noqa: E402
from certiqa.options import add_model_arguments, describe_model, load_model_from_args, model_spec  # noqa: E402
from certiqa.runner import certify_paths  # noqa: E402
from certiqa.smoothing import SmoothedIQA  # noqa: E402


def worker(args: argparse.Namespace) -> None:
    """One process of a configuration: certify the folder's images, rank 0 writes the timing."""
    torch.set_num_threads(args.threads)
    group, device = join(torch.device("cpu"))
    with group:
        model = load_model_from_args(args)
        smoothed = SmoothedIQA(model.to(device), 0.12, n=args.n, seed=0)
        paths = sorted(str(p) for p in Path(args.folder).glob("*.png"))
        smoothed.sample(load_image(paths[0]).unsqueeze(0), n=32)  # warm-up: first calls set up the kernels
        group.gather(None)  # every rank has loaded the model and warmed up: start together
        start = time.perf_counter()
        run = certify_paths(smoothed, paths, 0.05, out=args.out, provenance=describe_model(model), group=group,
                            min_size=model.min_size, progress=False, overwrite=True)  # the file of the last round
        seconds = time.perf_counter() - start
        if group.is_main:
            assert not run.errors, run.errors
            Path(args.timing).write_text(json.dumps({"seconds": seconds, "images": len(paths)}))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_configuration(args: argparse.Namespace, processes: int, folder: Path, work: Path) -> dict[str, float]:
    threads = args.threads // processes
    out, timing = work / f"rows-{processes}.jsonl", work / f"timing-{processes}.json"
    worker_args = ["--worker", "--folder", str(folder), "-n", str(args.n), "--threads", str(threads),
                   "--out", str(out), "--timing", str(timing), "--model", model_spec(args)]
    script = str(Path(__file__).resolve())
    if processes == 1:
        command = [sys.executable, script, *worker_args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes),
                   "--master-addr", "127.0.0.1", "--master-port", str(free_port()), script, *worker_args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, cwd=REPO)
    end_to_end = time.perf_counter() - start
    measured = json.loads(timing.read_text())
    rows = [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in out.read_text().splitlines()]
    return {"seconds": measured["seconds"], "end_to_end": end_to_end, "images": measured["images"], "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, nargs=2, default=(384, 512), metavar=("H", "W"))
    parser.add_argument("-n", "--n", type=int, default=500, help="noise samples per image")
    parser.add_argument("--threads", type=int, default=2, help="threads of the one process, shared by the K")
    parser.add_argument("--processes", type=int, default=2, help="K")
    parser.add_argument("--rounds", type=int, default=3)
    add_model_arguments(parser, denoiser=False)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--timing", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.threads % args.processes:
        raise SystemExit(f"--threads ({args.threads}) must be a multiple of --processes ({args.processes}).")
    with tempfile.TemporaryDirectory(prefix="certiqa-bench-") as tmp:
        folder, work = Path(tmp) / "images", Path(tmp)
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(args.images):
            Image.fromarray((rng.random((*args.size, 3)) * 255).astype(np.uint8)).save(folder / f"im{i:03d}.png")
        results: dict[int, list[dict]] = {1: [], args.processes: []}
        for round_ in range(args.rounds):
            order = [1, args.processes] if round_ % 2 == 0 else [args.processes, 1]
            for processes in order:
                results[processes].append(run_configuration(args, processes, folder, work))
    one, many = results[1], results[args.processes]
    identical = all(a["rows"] == b["rows"] for a, b in zip(one, many))
    print(f"Setting: {args.images} images {args.size[0]}x{args.size[1]}, n={args.n}, model {model_spec(args)}, batch 32, "
          f"{args.rounds} round(s), torch {torch.__version__}, {os.cpu_count()} CPU(s) visible")
    print("| configuration | certify seconds | images/s | end to end seconds |")
    print("| --- | --- | --- | --- |")
    for label, runs in ((f"1 process x {args.threads} threads", one),
                        (f"{args.processes} processes x {args.threads // args.processes} thread(s) (torchrun, gloo)",
                         many)):
        seconds = statistics.median(r["seconds"] for r in runs)
        print(f"| {label} | {seconds:.2f} | {runs[0]['images'] / seconds:.2f} | "
              f"{statistics.median(r['end_to_end'] for r in runs):.2f} |")
    ratio = statistics.median(a["seconds"] / b["seconds"] for a, b in zip(one, many))
    print(f"speed-up of {args.processes} processes over 1 (images/s ratio, median of rounds): {ratio:.2f}x")
    print(f"rows identical in every round: {'yes' if identical else 'NO'}")


if __name__ == "__main__":
    main()
