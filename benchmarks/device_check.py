"""Everything a lent GPU machine should measure, in one command with its own time budget.

    benchmarks/device_check.sh --wheels DIR [--data DIR] [--out DIR] [--budget 450] [...]
    python benchmarks/device_check.py --device cpu --n 8 --crop 48 ...   (the dry run of the tests)

Parts, in this order, each with a share of ``--budget`` seconds (time a part leaves unused
passes to the next; a part whose time is spent stops and records what it has):

  install      (no share) pip installs the wheels of ``--wheels DIR`` (``--no-index
               --no-deps``: the machine has no network; ``benchmarks/pack_wheels.sh DIR``
               builds that folder) and this checkout (``--no-deps --no-build-isolation``);
  tests        15 %  ``pytest -m cuda`` (the tests that skip without CUDA) and its counts;
  throughput   45 %  for CNNIQA-LIVE (``DATA/models/cnniqa-live.pt``) and for the default
               model with its shipped denoiser, on ``--images`` real images of
               ``DATA/images/labelled`` at full size, n ``--n``, sigma 0.12: for each
               precision (``--precisions``) and batch size (``--batch-sizes``) the time of
               ``SmoothedIQA.certify``, noisy images per second, the time of the bare
               forward passes (denoiser and model on pre-drawn noisy batches, same
               precision and batch size) and certify / forward, peak GPU memory, and the
               median and width against fp32 (same seed, so the same noise);
  seed_loop    15 %  the loop of the published research scripts on the same images: per
               image, batches of 10 noisy copies, the noise drawn on the host and moved to the device,
               scores copied back per batch, numpy sort; fp32; its rate against certify's
               best fp32 rate (the target is >= 3x);
  distributed  15 %  ``torchrun --nproc-per-node K`` (K = the GPUs present, 1 on the CPU)
               of ``certiqa certify`` on the images against one plain process (the rows
               must agree: an image's noise depends on the seed and its file), and a
               process-group probe (NCCL on CUDA, gloo on the CPU) with one all_reduce.

Timings are one warm run each (after a warm-up batch), synchronised on CUDA. Writes
``device_check.json`` (every figure, every part's status, seconds and share) and
``device_check.md`` (the same as tables) under ``--out`` (default ``$OUT``), plus the
logs of pytest and torchrun; the last lines printed are the markdown.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import re
import shutil
import socket
import subprocess
import tempfile
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SHARES = {"tests": 0.15, "throughput": 0.45, "seed_loop": 0.15, "distributed": 0.15}  # the rest is slack
SIGMA, EPS = 0.12, 0.05
LOOP_BATCH = 10  # the research scripts' batch of noisy copies


def default_data() -> Path:
    """``shared/data`` inside the checkout (how data travels to a lent machine), else ``../shared/data``."""
    inside = REPO / "shared" / "data"
    return inside if inside.is_dir() else REPO.parent / "shared" / "data"


class Budget:
    """Per-part deadlines: part p may run until its start + share_p * total + what earlier
    parts left unused, and never past the start + total."""

    def __init__(self, total: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self.total, self.clock = float(total), clock
        self.start = clock()
        self.saved = 0.0
        self.deadline = self._begun = self.start

    def begin(self, part: str) -> float:
        """Start ``part``; returns its allowance in seconds."""
        now = self.clock()
        allowance = min(SHARES[part] * self.total + self.saved, self.start + self.total - now)
        self.deadline = now + max(allowance, 0.0)
        self._begun = now
        return max(allowance, 0.0)

    def end(self) -> float:
        """End the current part; returns the seconds it took and banks what it left."""
        now = self.clock()
        self.saved = max(self.deadline - now, 0.0)
        return now - self._begun

    def left(self) -> float:
        """Seconds left to the current part."""
        return self.deadline - self.clock()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    _sync(device)
    start = time.perf_counter()
    value = fn()
    _sync(device)
    return time.perf_counter() - start, value


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def part_install(args: argparse.Namespace) -> dict[str, Any]:
    """pip install the wheels folder and this checkout, offline and without dependencies."""
    if args.wheels is None:
        return {"status": "skipped (no --wheels: using the installed packages)"}
    wheels = sorted(str(p) for p in Path(args.wheels).glob("*.whl"))
    steps = []
    for command in (
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--find-links", args.wheels, *wheels],
        [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-build-isolation", str(REPO)],
    ):
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        steps.append({"command": " ".join(command[1:]), "rc": done.returncode,
                      "output": _tail(done.stdout + done.stderr, 5)})
    importlib.invalidate_caches()
    ok = all(s["rc"] == 0 for s in steps)
    return {"status": "ok" if ok else "failed", "wheels": [Path(w).name for w in wheels], "steps": steps}


def part_tests(args: argparse.Namespace, budget: Budget) -> dict[str, Any]:
    """``pytest -m cuda`` on ``args.tests`` within the part's time; counts from its summary line."""
    left = budget.left()
    if left < 5:
        return {"status": "skipped (budget spent)"}
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "-o", "addopts=",
               *args.tests]
    try:
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=left)
        output, rc, status = done.stdout + done.stderr, done.returncode, None
    except subprocess.TimeoutExpired as err:
        output, rc, status = _text(err.stdout) + _text(err.stderr), None, "stopped (budget spent)"
    (args.out / "device_check_tests.log").write_text(output)
    counts = {kind: int(number) for number, kind in
              re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)", _tail(output, 1))}
    if status is None:  # pytest exits 5 when every test was deselected (no CUDA test collected)
        status = "ok" if rc in (0, 5) and not counts.get("failed") and not counts.get("error") else "failed"
    return {"status": status, "rc": rc, "counts": counts, "command": " ".join(command[1:]), "tail": _tail(output, 8)}


def _models(args: argparse.Namespace, device: torch.device) -> list[tuple[str, Any, Any]]:
    from certiqa.denoisers import pretrained
    from certiqa.models import load_model

    live = load_model(f"cnniqa:{args.data / 'models' / 'cnniqa-live.pt'}").to(device)
    default = load_model("default").to(device)
    return [("CNNIQA-LIVE", live, None), ("default + denoiser", default, pretrained(SIGMA).to(device))]


def _images(args: argparse.Namespace, min_size: int) -> list[tuple[str, torch.Tensor]]:
    from certiqa.io import find_images, load_image

    paths = find_images([str(args.data / "images" / "labelled")])[: args.images]
    if len(paths) < args.images:
        raise ValueError(f"{args.images} image(s) asked for, {len(paths)} found in "
                         f"{args.data / 'images' / 'labelled'}; pass --data DIR (the shared data folder).")
    images = []
    for path in paths:
        image = load_image(path, min_size=min_size)
        if args.crop:
            image = image[:, : args.crop, : args.crop].contiguous()
        images.append((Path(path).name, image))
    return images


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def part_throughput(args: argparse.Namespace, budget: Budget, device: torch.device) -> dict[str, Any]:
    """certify against bare forward passes, per model, precision and batch size."""
    from certiqa import SmoothedIQA

    rows: list[dict[str, Any]] = []
    status = "ok"
    # fp32 at the first batch size comes first for every model, then the reduced precisions,
    # then the other batch sizes: what matters most is measured first when time runs short
    plan = [(p, b) for b in args.batch_sizes[:1] for p in args.precisions]
    plan += [(p, b) for b in args.batch_sizes[1:] for p in args.precisions]
    for label, model, denoiser in _models(args, device):
        images = _images(args, model.min_size)
        reference: dict[int, list[float]] = {}  # batch -> the fp32 medians (noise depends on the batch size)
        for precision, batch in plan:
            if budget.left() <= 0:
                status = "stopped (budget spent)"
                break
            smoothed = SmoothedIQA(model, SIGMA, n=args.n, batch_size=batch, denoiser=denoiser, seed=0,
                                   precision=precision)
            row: dict[str, Any] = {"model": label, "precision": precision, "batch": batch, "n": args.n,
                                   "images": len(images),
                                   "size": " ".join(dict.fromkeys("x".join(map(str, im.shape[1:])) for _, im in images))}
            try:
                x0 = images[0][1].unsqueeze(0).to(device)
                smoothed.sample(x0, n=batch)  # warm-up: kernels, allocator, autocast caches
                _peak_reset(device)
                certify_s, results = 0.0, []
                for _, image in images:
                    seconds, res = _timed(lambda: smoothed.certify(image.unsqueeze(0).to(device), EPS), device)
                    certify_s += seconds
                    results.append(res)
                row["peak_mib"] = _peak_mib(device)
                forward_s = sum(_timed(lambda: _bare_forward(smoothed, image.to(device), device), device)[0]
                                for _, image in images)
            except Exception as err:  # out of memory, or fp16 overflowing to inf: a finding for this row
                row["error"] = "out of memory" if isinstance(err, torch.OutOfMemoryError) else \
                    f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
                rows.append(row)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            total = args.n * len(images)
            row.update(certify_s=certify_s, noisy_per_s=total / certify_s, forward_s=forward_s,
                       certify_over_forward=certify_s / forward_s)
            medians = [float(r.median[0]) for r in results]
            widths = [float(r.width[0]) for r in results]
            if precision == "fp32":
                reference[batch] = medians
            if batch in reference:  # same seed and batch size: the same noise as the fp32 run
                row["max_median_shift_vs_fp32"] = max(abs(m - r) for m, r in zip(medians, reference[batch]))
            row["mean_width"] = float(np.mean(widths)) if all(map(math.isfinite, widths)) else None  # None: n too small
            rows.append(row)
    return {"status": status, "rows": rows}


def _bare_forward(smoothed: Any, image: torch.Tensor, device: torch.device) -> None:
    """n forward passes (denoiser and model) over one pre-drawn noisy batch, in the run's
    precision and batch size: what certify costs without noise, bookkeeping and sorting."""
    batch = smoothed.batch_size
    noisy = (image.unsqueeze(0) + SIGMA * torch.randn((batch, *image.shape), device=device)).clamp(0, 1)
    with torch.inference_mode(), smoothed.autocast(device):
        for start in range(0, smoothed.n, batch):
            z = noisy[: min(batch, smoothed.n - start)]
            smoothed.model(smoothed.denoiser(z) if smoothed.denoiser is not None else z)


def part_seed_loop(args: argparse.Namespace, budget: Budget, device: torch.device,
                   throughput: dict[str, Any]) -> dict[str, Any]:
    """The research scripts' loop on the throughput part's images, fp32; it stops when the part's
    time is spent (its rate then comes from the images it did)."""
    rows = []
    status = "ok"
    for label, model, denoiser in _models(args, device):
        images = _images(args, model.min_size)
        done = 0
        generator = torch.Generator().manual_seed(0)
        _sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            for _, image in images:
                scores = []
                for first in range(0, args.n, LOOP_BATCH):
                    if budget.left() <= 0:
                        break
                    rows_now = min(LOOP_BATCH, args.n - first)
                    noise = torch.randn((rows_now, *image.shape), generator=generator) * SIGMA  # on the host
                    noisy = (image.unsqueeze(0) + noise).clamp(0, 1).to(device)
                    if denoiser is not None:
                        noisy = denoiser(noisy)
                    scores.append(model(noisy).reshape(-1).cpu().numpy())  # to the host, batch by batch
                    done += rows_now
                if scores:
                    np.sort(np.concatenate(scores))
        seconds = time.perf_counter() - start
        if done == 0:
            status = "stopped (budget spent)"
            break
        fp32 = [r for r in throughput.get("rows", []) if r["model"] == label and r["precision"] == "fp32"
                and "noisy_per_s" in r]
        best = max(fp32, key=lambda r: r["noisy_per_s"]) if fp32 else None
        row = {"model": label, "noisy": done, "seconds": seconds, "noisy_per_s": done / seconds,
               "complete": done == args.n * len(images)}
        if best is not None:
            row.update(certify_batch=best["batch"], certify_noisy_per_s=best["noisy_per_s"],
                       speedup=best["noisy_per_s"] / (done / seconds))
        rows.append(row)
        if not row["complete"]:
            status = "partial (budget spent)"
    return {"status": status, "rows": rows, "target_speedup": 3.0}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def part_distributed(args: argparse.Namespace, budget: Budget, device: torch.device) -> dict[str, Any]:
    """torchrun of the certify command against one process, and a process-group probe."""
    from PIL import Image

    from certiqa.models import load_model

    processes = max(torch.cuda.device_count(), 1) if device.type == "cuda" else 1
    backend = "nccl" if device.type == "cuda" else "gloo"
    work = Path(tempfile.mkdtemp(prefix="device_check_"))  # scratch: $OUT keeps only what should come back
    for name, image in _images(args, load_model("default").min_size):
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(work / f"{Path(name).stem}.png")
    n = min(args.n, 200)
    certify = ["-m", "certiqa", "certify", str(work), "-n", str(n), "--seed", "0", "--quiet", "--device", device.type]
    device_expr = "torch.device('cuda', int(os.environ['LOCAL_RANK']))" if backend == "nccl" else "'cpu'"
    probe = ("import os, torch, torch.distributed as d; "
             f"d.init_process_group({backend!r}); device = {device_expr}; "
             "t = torch.ones(1, device=device); d.all_reduce(t); "
             "print('all_reduce', t.item(), 'ranks', d.get_world_size()); d.destroy_process_group()")

    def torchrun(*command: str) -> list[str]:
        return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--master-port",
                str(_free_port()), *command]

    runs = {
        "probe": torchrun("--no-python", sys.executable, "-c", probe),
        "torchrun": torchrun(*certify, "--out", str(work / "torchrun.jsonl")),
        "single": [sys.executable, *certify, "--out", str(work / "single.jsonl")],
    }
    log, results, status = [], {}, "ok"
    for name, command in runs.items():
        left = budget.left()
        if left < 3:
            status = "stopped (budget spent)"
            results[name] = {"status": "skipped (budget spent)"}
            continue
        start = time.perf_counter()
        try:
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=left)
            rc, output = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as err:
            rc, output, status = None, _text(err.stdout) + _text(err.stderr), "stopped (budget spent)"
        results[name] = {"rc": rc, "seconds": time.perf_counter() - start, "tail": _tail(output, 4)}
        log.append(f"$ {' '.join(command)}\n{output}")
        if rc not in (0, None):
            status = "failed"
    (args.out / "device_check_distributed.log").write_text("\n".join(log))
    rows = {}
    for name in ("torchrun", "single"):
        path = work / f"{name}.jsonl"
        if path.is_file():
            rows[name] = [{k: v for k, v in json.loads(line).items() if k in ("path", "median", "lower", "upper")}
                          for line in path.read_text().splitlines()]
    shutil.rmtree(work, ignore_errors=True)
    agree = rows["torchrun"] == rows["single"] if len(rows) == 2 else None
    if agree is False:
        status = "failed"
    return {"status": status, "processes": processes, "backend": backend, "n": n, "runs": results,
            "rows": len(rows.get("torchrun", [])), "rows_agree": agree}


def _text(output: str | bytes | None) -> str:
    """What a timed-out subprocess had written (bytes, text or nothing)."""
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def markdown(report: dict[str, Any]) -> str:
    meta, parts = report["meta"], report["parts"]
    lines = [f"# device check: {meta['device_name']}", "",
             f"torch {meta['torch']}, certiqa {meta['certiqa']}, commit {meta['commit']}, {meta['date']}, "
             f"budget {meta['budget_s']:g} s, took {report['total_s']:.1f} s", "",
             "| part | status | seconds | allowance |", "| --- | --- | --- | --- |"]
    for name, part in parts.items():
        lines.append(f"| {name} | {part['status']} | {_fmt(part.get('seconds'))} | {_fmt(part.get('allowance_s'))} |")
    tests = parts.get("tests", {})
    if tests.get("counts") is not None:
        lines += ["", "pytest -m cuda: " + ", ".join(f"{v} {k}" for k, v in tests["counts"].items())]
    columns = ["model", "precision", "batch", "size", "n", "images", "certify_s", "noisy_per_s", "forward_s",
               "certify_over_forward", "peak_mib", "max_median_shift_vs_fp32", "mean_width", "error"]
    if parts.get("throughput", {}).get("rows"):
        lines += ["", "## throughput (certify at sigma 0.12, eps 0.05)", "", "| " + " | ".join(columns) + " |",
                  "|" + " --- |" * len(columns)]
        lines += ["| " + " | ".join(_fmt(r.get(c)) for c in columns) + " |" for r in parts["throughput"]["rows"]]
    loop_columns = ["model", "noisy", "seconds", "noisy_per_s", "complete", "certify_batch", "certify_noisy_per_s",
                    "speedup"]
    if parts.get("seed_loop", {}).get("rows"):
        lines += ["", "## against the research scripts' loop (fp32, batches of 10, noise on the host; target >= 3x)",
                  "", "| " + " | ".join(loop_columns) + " |", "|" + " --- |" * len(loop_columns)]
        lines += ["| " + " | ".join(_fmt(r.get(c)) for c in loop_columns) + " |" for r in parts["seed_loop"]["rows"]]
    dist = parts.get("distributed", {})
    if "runs" in dist:
        lines += ["", f"## torchrun ({dist['processes']} process(es), {dist['backend']})", "",
                  f"rows {dist['rows']}, agree with one process: {dist['rows_agree']}; " + "; ".join(
                      f"{k}: rc {v.get('rc')}, {_fmt(v.get('seconds'))} s" for k, v in dist["runs"].items())]
    return "\n".join(lines) + "\n"


def _commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() or None
    except OSError:
        return None


def _write(out: Path, report: dict[str, Any]) -> None:
    (out / "device_check.json").write_text(json.dumps(report, indent=1, default=str, allow_nan=False))
    (out / "device_check.md").write_text(markdown(report))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheels", metavar="DIR", help="wheels to install offline first (benchmarks/pack_wheels.sh)")
    parser.add_argument("--data", type=Path, default=None,
                        help="the shared data folder (default: shared/data in the checkout, else ../shared/data)")
    parser.add_argument("--out", type=Path, default=None, help="where the JSON and markdown go (default: $OUT)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all parts together (450)")
    parser.add_argument("--n", type=int, default=1000, help="noise samples per image (1000)")
    parser.add_argument("--images", type=int, default=2, help="real images per model (2)")
    parser.add_argument("--crop", type=int, default=None, help="crop images to CROPxCROP (dry runs; default full size)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 32, 512],
                        help="the first is the main one (128 32 512)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--tests", nargs="+", default=["tests"], help="what pytest -m cuda runs (tests)")
    parser.add_argument("--parts", nargs="+", default=list(SHARES), choices=list(SHARES),
                        help="the parts to run (all; the others keep their share unused)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    budget = Budget(args.budget)
    out = args.out if args.out is not None else os.environ.get("OUT")
    if out is None:
        raise SystemExit("device_check: error: no --out and no $OUT; pass --out DIR.")
    args.out = Path(out)
    args.out.mkdir(parents=True, exist_ok=True)
    args.data = args.data if args.data is not None else default_data()
    if not (args.data / "models" / "cnniqa-live.pt").is_file():
        raise SystemExit(f"device_check: error: {args.data / 'models' / 'cnniqa-live.pt'} not found; pass --data DIR "
                         "(the shared data folder: carry it to the machine as shared/data in the checkout).")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("device_check: error: --device cuda but torch.cuda.is_available() is False; "
                         "use --device cpu for a dry run.")
    device = torch.device(args.device)
    parts: dict[str, dict[str, Any]] = {"install": part_install(args)}
    try:
        certiqa = importlib.import_module("certiqa")  # after the install: the package may be new
    except ImportError as err:
        (args.out / "device_check.json").write_text(json.dumps({"parts": parts}, indent=1, default=str))
        raise SystemExit(f"device_check: error: certiqa cannot be imported ({err}); see the install part in "
                         f"{args.out / 'device_check.json'}.") from None
    report: dict[str, Any] = {
        "meta": {"device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
                 else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
                 "gpus": torch.cuda.device_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
                 "tf32": {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32},
                 "certiqa": certiqa.__version__, "commit": _commit(),
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "budget_s": args.budget,
                 "shares": SHARES, "argv": sys.argv[1:] if argv is None else argv, "data": str(args.data)},
        "parts": parts,
    }
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "tests": lambda: part_tests(args, budget),
        "throughput": lambda: part_throughput(args, budget, device),
        "seed_loop": lambda: part_seed_loop(args, budget, device, parts.get("throughput", {})),
        "distributed": lambda: part_distributed(args, budget, device),
    }
    for name, run in runners.items():
        if name not in args.parts:
            continue
        allowance = budget.begin(name)
        try:
            part = run() if allowance > 0 else {"status": "skipped (budget spent)"}
        except Exception as err:  # one part's failure is a finding: record it and go on
            part = {"status": f"failed: {type(err).__name__}: {err}"}
        part.update(seconds=budget.end(), allowance_s=allowance)
        parts[name] = part
        report["total_s"] = time.perf_counter() - budget.start
        _write(args.out, report)  # after every part: a run killed later still leaves what it had
    report["total_s"] = time.perf_counter() - budget.start
    _write(args.out, report)
    print(markdown(report))
    return 1 if any(p["status"].startswith("failed") for p in parts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
