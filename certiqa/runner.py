"""Certify image files and write the results: the engine behind ``certiqa certify``
and ``certify/certify_set.py``.

Nothing is lost and nothing is done twice:

- one run writes an output at a time: rank 0 holds an OS lock on ``OUT.lock``
  (:mod:`certiqa.locking`) for the whole run, and a second run is refused with the
  first one's pid and host;
- an existing non-empty output is refused unless ``resume`` (continue it) or
  ``overwrite`` (replace it) is given;
- each image's rows are appended to the output and flushed to disk (fsync) as soon
  as the image is certified: CSV for ``.csv``, JSON Lines for ``.jsonl``. A ``.json``
  output is written atomically at the end; meanwhile its rows stream to
  ``OUT.partial.jsonl``. The output is opened before any work, so an unwritable
  ``--out`` is refused at once. A failed write (disk full) removes the part of the
  image it wrote, stops the run and says how many rows are safe;
- ``resume=True`` keeps every image whose rows are complete in the output (a torn
  last line left by a kill is dropped and its image redone) and certifies the
  others, once it has checked that the output was made with the same settings
  (batch size and noise-buffer limit included: the noise depends on them); an
  image whose file changed since (its SHA-256 differs) is certified again;
- SIGINT / SIGTERM drop the image being certified (or let its rows finish writing),
  keep every finished row and return (exit status 130 / 143 in the command line);
- an image that fails (unreadable, too small, too large for the noise-buffer limit,
  out of memory, the model raising) is reported and the run goes on;
- under torchrun (:mod:`certiqa.distributed`) each process certifies every K-th
  image still to do into ``OUT.parts/rank-R.jsonl``, and rank 0 merges the parts
  into OUT in input order at the end (or at the next resume).

At the end (and after an interruption) OUT holds every finished row in input order.
Every row records where it came from: the settings, the provenance dict of the
caller (model and denoiser names and SHA-256, lower_better, score_range), the
image file's SHA-256, the device and the torch and certiqa versions.

With a seed, the noise of an image is drawn from ``SeedSequence([seed, *words])``,
words being the image file's SHA-256 (:func:`image_noise_seed`): it depends on the
seed and the file only, not on the image's position, rank or the number of
processes (and, as always, on the device and the batch size, which each row records).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import errno
import io
import json
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__, bounds
from ._checks import check_nonnegative, check_open_unit, check_scores
from .distributed import Group
from .io import file_sha256, read_image
from .locking import LockHeld, OutputLock
from .memory import is_out_of_memory
from .metrics import plcc, srocc
from .smoothing import SmoothedIQA, _eval_mode, certify_samples, model_rng

__all__ = [
    "CertifyRun",
    "RunRefused",
    "certify_paths",
    "check_output_path",
    "image_noise_seed",
    "flatness_warning",
    "range_warning",
    "format_table",
    "model_line",
    "row_reason",
    "COLUMNS",
    "summarize_by_eps",
    "RESULT_COLUMNS",
    "SEQUENTIAL_COLUMNS",
    "ENVIRONMENT_COLUMNS",
    "SETTING_COLUMNS",
    "FAMILY_COLUMNS",
    "read_results",
    "DEFAULT_MAX_NOISE_BYTES",
    "FLAT_RATIO",
    "FLAT_MIN_IMAGES",
    "FLAT_MIN_SPAN",
    "RANGE_SLACK",
    "SIGMA_WARN",
]

RESULT_COLUMNS = (
    "path", "median", "lower", "upper", "width", "certified", "reason", "eps", "sigma", "n", "alpha", "precision",
    "seconds", "clean", "shift", "seed", "resize", "batch_size", "requested_batch", "max_noise_bytes", "resized_from",
    "frames", "image_sha256",
)
SEQUENTIAL_COLUMNS = ("decision", "delta", "n0", "growth", "spending", "futility", "n_used")
ENVIRONMENT_COLUMNS = ("device", "torch", "certiqa")
# With a family level: the level asked for and the number of images it is spread over
# (alpha = family_alpha / family_size); compared on resume like the settings.
FAMILY_COLUMNS = ("family_alpha", "family_size")
# What each column of a results file means, in file order (``certiqa certify --columns`` prints it;
# the provenance columns are those of certiqa.options.describe_models).
COLUMNS = {
    "path": "the image file, as given",
    "median": "smoothed score: the median of the model's scores of n noisy copies (model units)",
    "lower": "certified lower bound of the smoothed score under every l2 perturbation of norm <= eps "
             "(-inf: not certified)",
    "upper": "certified upper bound, likewise (+inf: not certified)",
    "width": "upper - lower (model units)",
    "certified": "True where both bounds are finite (with --delta: where the decision is 'certified')",
    "reason": "why a row is not certified (empty where it is): n too small for alpha, eps too large for sigma "
              "and n, or, with --delta, what its decision means",
    "eps": "radius: l2 norm of the whole perturbation, pixels in [0, 1]",
    "sigma": "noise standard deviation, pixels in [0, 1]",
    "n": "noise samples per image (with --delta: n_max, the samples of the last look)",
    "alpha": "probability that a certificate is wrong (over the noise); with --family-alpha, family_alpha / "
             "family_size",
    "precision": "the arithmetic of model and denoiser: fp32, or bf16 / fp16 under torch.autocast (the "
                 "certificates are those of that model)",
    "seconds": "time spent on the image (every radius)",
    "clean": "the model's score of the image itself (no noise, no denoiser)",
    "shift": "median - clean: how far smoothing moves the score",
    "seed": "noise seed (empty: fresh noise); with the image's SHA-256 it seeds the image",
    "resize": "the images' shorter side when resized (empty: full size)",
    "batch_size": "noisy images per forward pass for this image (lowered for large images)",
    "requested_batch": "--batch-size as given (the noise depends on it; compared on resume)",
    "max_noise_bytes": "--max-noise-mb in bytes (it lowers the batch of large images; compared on resume)",
    "resized_from": "the original size WxH where the image was resized",
    "frames": "frames in the file (only the first is certified)",
    "image_sha256": "SHA-256 of the image file",
    "decision": "with --delta: certified, not certifiable (proven), futile (stopped early) or undecided",
    "delta": "with --delta: the certified half-width asked for, model units",
    "n0": "with --delta: samples of the first look",
    "growth": "with --delta: ratio of successive looks' samples",
    "spending": "with --delta: how alpha is spread over the looks (equal, decreasing, final)",
    "futility": "with --delta: the early-stop test: proof, 'prediction E' (error <= E) or 'power E' "
                "(no error bound)",
    "n_used": "with --delta: samples the image used",
    "family_alpha": "with --family-alpha: probability that any of the run's certificates is wrong",
    "family_size": "with --family-alpha: the number of images the family level is spread over",
    "model": "the model spec",
    "model_sha256": "SHA-256 of the model's file (empty for factories and pyiqa metrics)",
    "lower_better": "True when a lower score means better quality",
    "score_range": "nominal [lo, hi] of the model's scores",
    "randomized": "True when the model scored one input differently on two calls (its randomness is then seeded "
                  "per image)",
    "model_provenance": "for a fine-tuned student (certiqa finetune): its teacher, sigma, recipe and seed, as JSON",
    "denoiser": "the denoiser put before the model inside the smoothing (empty: none)",
    "denoiser_sha256": "SHA-256 of the denoiser's file",
    "device": "where the noise was drawn and the model ran (cpu, cuda:K)",
    "torch": "torch version",
    "certiqa": "certiqa version",
}
# Compared on resume, with every key of the caller's provenance and the radii.
SETTING_COLUMNS = ("sigma", "n", "alpha", "precision", "seed", "resize", "requested_batch", "max_noise_bytes")
# A setting's value in rows written before its column existed (missing or empty there).
_UNRECORDED = {"precision": "fp32"}
DEFAULT_MAX_NOISE_BYTES = 2 << 30
FLAT_RATIO = 0.1  # medians spanning less than this share of the clean scores' span: flat
FLAT_MIN_IMAGES = 3  # the flatness warning needs at least this many images ...
FLAT_MIN_SPAN = 0.1  # ... whose clean scores span at least this share of the model's score range
RANGE_SLACK = 0.05  # a median farther outside the score range than this share of its width is warned about
SIGMA_WARN = 1.0  # sigma above the whole pixel range [0, 1] is warned about

_FLOATS = frozenset({"median", "lower", "upper", "width", "eps", "sigma", "alpha", "seconds", "clean", "shift", "delta",
                     "growth", "family_alpha"})
_INTS = frozenset({"n", "seed", "resize", "batch_size", "requested_batch", "max_noise_bytes", "frames", "n0",
                   "n_used", "family_size"})
_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "json"}
_SIGNALS = (signal.SIGINT, signal.SIGTERM)

Log = Callable[[str], None]


class RunRefused(ValueError):
    """The run cannot start: the output cannot be written, or resuming it would mix settings."""


@dataclass
class CertifyRun:
    """What a run did, seen from one process.

    On rank 0 (the only process without torchrun): ``rows`` are every row of the
    output in input order (earlier rows included when resuming), ``errors`` one
    ``"PATH: reason"`` line per image that failed on any rank, ``certified`` the
    images certified by this run on all ranks. On other ranks: their own counts and
    errors, no rows. ``interrupted`` is the signal number that stopped this process;
    ``stopped`` the one-line reason the run stopped early because its rows could not
    be written (a full disk), saying what is kept and how to resume (already logged).
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    resumed: int = 0
    certified: int = 0
    remaining: int = 0
    interrupted: int | None = None
    stopped: str | None = None
    is_main: bool = True

    @property
    def exit_status(self) -> int:
        """128 + the signal number when interrupted (130 for SIGINT, 143 for SIGTERM);
        else 1 when the rows could not be written, or when an image failed (rank 0 only,
        which counts every rank's failures); else 0."""
        if self.interrupted is not None:
            return 128 + self.interrupted
        return 1 if self.stopped or self.errors and self.is_main else 0


def check_output_path(out: str | os.PathLike) -> Path:
    """Refuse an output path whose suffix is not .csv, .jsonl or .json (before any work is done)."""
    out = Path(out)
    if out.suffix.lower() not in _FORMATS:
        raise ValueError(f"--out must end in .csv, .jsonl or .json, got {str(out)!r}.")
    return out


def image_noise_seed(seed: int, sha256_hex: str) -> list[int]:
    """The noise seed of one image, ``[seed, w1, ..., w8]`` with w the eight big-endian
    32-bit words of the image file's SHA-256; pass it as ``SmoothedIQA.sample(x, seed=...)``."""
    return [seed, *(int(w) for w in np.frombuffer(bytes.fromhex(sha256_hex), dtype=">u4"))]


def certify_paths(
    smoothed: SmoothedIQA,
    paths: Iterable[str | os.PathLike],
    eps: float | Sequence[float],
    *,
    out: str | os.PathLike | None = None,
    provenance: Mapping[str, Any] | None = None,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    min_size: int = 1,
    resize: int | tuple[int, int] | None = None,
    max_noise_bytes: int = DEFAULT_MAX_NOISE_BYTES,
    group: Group | None = None,
    progress: bool = True,
    log: Log | None = None,
    sequential: Mapping[str, Any] | None = None,
    family_alpha: float | None = None,
) -> CertifyRun:
    """Certify each image file on its own, streaming the rows to ``out``.

    One noise sample set per image serves every radius in ``eps`` (one row per image
    and radius, columns :data:`RESULT_COLUMNS`, then the keys of ``extra``, then those
    of ``provenance``, then :data:`ENVIRONMENT_COLUMNS`). ``clean`` is the model's
    score of the image itself (no noise, no denoiser) and ``shift`` = median - clean.

    Args:
        smoothed: the smoothed model; its seed, with each file's SHA-256, seeds each image.
        paths: image files; a file given twice (by any spelling) is certified once.
        eps: radius or radii (duplicates dropped).
        out: a .csv, .jsonl or .json file (None: rows only returned, nothing written).
        provenance: plain values recorded in every row and compared on resume, e.g.
            model, model_sha256, denoiser, denoiser_sha256, lower_better, score_range.
        extra: per path (as given), more columns for its rows (e.g. a human score).
        resume: keep the images already complete in ``out`` and certify the others.
        overwrite: replace an existing non-empty ``out`` (refused without it or ``resume``).
        min_size, resize: passed to :func:`certiqa.io.read_image`.
        max_noise_bytes: largest noise buffer; an image whose ``batch_size`` noisy
            copies exceed it is certified with a smaller batch, or refused when one
            copy does.
        group: this process's place under torchrun (default: one process).
        progress: show a progress bar (rank 0 only).
        log: where messages go (default: stderr, above the progress bar).
        sequential: ``{"delta": D, "n0": N0, "n_max": N}`` (optionally ``"growth"``, ``"spending"``,
            ``"futility"`` and ``"futility_error"``; the others are those of
            :data:`certiqa.bounds.DEFAULT_SCHEME`) to certify each radius sequentially instead
            (:meth:`SmoothedIQA.certify_sequential`, its own samples per radius); rows add
            :data:`SEQUENTIAL_COLUMNS` and ``n`` is n_max.
        family_alpha: a family level A: each image is certified at alpha = A / N, N being the
            number of distinct images in ``paths`` (all of them, on every rank and on resume, not
            only those left to do), so that all N intervals hold at once with probability
            >= 1 - A (union bound). Overrides ``smoothed.alpha``; rows add
            :data:`FAMILY_COLUMNS`, and a resume with another A or another image set is refused.

    Raises:
        RunRefused: ``out`` cannot be written, is being written by another run, exists
            (without ``resume`` or ``overwrite``), is not a certiqa results file, or (with
            ``resume``) was made with other settings; raised on every rank, before any
            image is certified.
    """
    radii = list(dict.fromkeys(check_nonnegative("eps", e) for e in ([eps] if isinstance(eps, (int, float)) else eps)))
    if not radii:
        raise ValueError("eps must name at least one radius.")
    return _Run(
        smoothed, list(paths), radii, out=out, provenance=dict(provenance or {}), extra=extra or {}, resume=resume,
        overwrite=overwrite, min_size=min_size, resize=resize, max_noise_bytes=max_noise_bytes, group=group or Group(),
        progress=progress, log=log or _stderr, family_alpha=family_alpha,
        sequential={**dataclasses.asdict(bounds.DEFAULT_SCHEME), **sequential} if sequential else None,
    ).run()


def _stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


class _ImageFailure(Exception):
    """One image cannot be certified; the message names the file and the reason."""


class _Interrupted(BaseException):
    """Raised by the signal handler to drop the image being certified."""


class _SignalGuard:
    """Turns SIGINT/SIGTERM into :class:`_Interrupted`, or, inside :meth:`deferred`,
    into a flag read after the block (so rows are never half written). Handlers are
    installed only in the main thread and restored on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._deferring = 0
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> "_SignalGuard":
        if threading.current_thread() is threading.main_thread():
            self._saved = {s: signal.signal(s, self._handle) for s in _SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._saved.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
        if not self._deferring:
            raise _Interrupted(signum)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1


class _Run:
    def __init__(
        self,
        smoothed: SmoothedIQA,
        paths: list[str | os.PathLike],
        radii: list[float],
        *,
        out: str | os.PathLike | None,
        provenance: dict[str, Any],
        extra: Mapping[str, Mapping[str, Any]],
        resume: bool,
        overwrite: bool,
        min_size: int,
        resize: int | tuple[int, int] | None,
        max_noise_bytes: int,
        group: Group,
        progress: bool,
        log: Log,
        sequential: dict[str, Any] | None,
        family_alpha: float | None,
    ) -> None:
        self.smoothed, self.radii, self.group, self.log = smoothed, radii, group, log
        self.sequential = sequential
        self.min_size, self.resize, self.max_noise_bytes = min_size, resize, int(max_noise_bytes)
        self.provenance, self.extra, self.resume, self.progress = provenance, extra, resume, progress
        self.overwrite = overwrite
        if resume and overwrite:
            raise RunRefused("give --resume (keep the rows already in --out) or --overwrite (replace them), not both.")
        self.paths = self._unique(paths)
        family: dict[str, Any] = {}
        if family_alpha is not None:
            family = {"family_alpha": check_open_unit("family_alpha", family_alpha), "family_size": len(self.paths)}
            self.smoothed = copy.copy(smoothed)
            self.smoothed.alpha = check_open_unit("family_alpha / N", family_alpha / max(len(self.paths), 1))
        self.out = check_output_path(out) if out is not None else None
        if self.out is None and (resume or group.distributed):
            raise RunRefused("--resume and torchrun runs need --out: the rows are kept in (and met through) files.")
        self.fmt = _FORMATS[self.out.suffix.lower()] if self.out is not None else None
        if self.out is not None:
            self.home = self.out if self.fmt != "json" else self.out.with_name(self.out.name + ".partial.jsonl")
            self.parts = self.out.with_name(self.out.name + ".parts")
            self.lock = OutputLock(self.out)
        self.stream_fmt = "csv" if self.fmt == "csv" and not group.distributed else "jsonl"
        extra_keys = sorted({k for columns in extra.values() for k in columns})
        keys = [*extra_keys, *provenance]
        clash = sorted({k for k in keys if k in RESULT_COLUMNS or k in ENVIRONMENT_COLUMNS or keys.count(k) > 1})
        if clash:
            raise ValueError(f"extra and provenance columns must be new and distinct, got {clash} more than once.")
        self.columns = [*RESULT_COLUMNS, *(SEQUENTIAL_COLUMNS if sequential else ()), *family, *extra_keys,
                        *provenance, *ENVIRONMENT_COLUMNS]
        self.file_columns = list(self.columns)
        self.environment = {
            "device": str(smoothed.device_for(torch.empty(0))),
            "torch": torch.__version__,
            "certiqa": __version__,
        }
        settings = {"sigma": smoothed.sigma, "n": smoothed.n, "alpha": self.smoothed.alpha,
                    "precision": smoothed.precision, "seed": smoothed.seed,
                    "resize": list(resize) if isinstance(resize, tuple) else resize,
                    "requested_batch": smoothed.batch_size, "max_noise_bytes": self.max_noise_bytes,
                    **family}
        if sequential:
            settings.update(n=sequential["n_max"], delta=sequential["delta"], n0=sequential["n0"],
                            growth=float(sequential["growth"]), spending=sequential["spending"],
                            futility=bounds.futility_setting(sequential["futility"], sequential["futility_error"]))
        self.settings = {**settings, **provenance}
        self.expected = {**{key: "" for key in FAMILY_COLUMNS}, **{key: _text(v) for key, v in self.settings.items()}}
        self.radii_text = sorted(_text(r) for r in radii)

    def _unique(self, paths: list[str | os.PathLike]) -> list[str]:
        seen: set[str] = set()
        unique = []
        for path in paths:
            key = os.path.realpath(path)
            if key in seen:
                self.log(f"note: {os.fspath(path)} is given more than once; it is certified once.")
                continue
            seen.add(key)
            unique.append(os.fspath(path))
        return unique

    # -- the run ---------------------------------------------------------------------

    def run(self) -> CertifyRun:
        try:
            return self._run()
        finally:
            if self.out is not None and self.group.is_main:
                self.lock.release()

    def _run(self) -> CertifyRun:
        if self.group.is_main and self.smoothed.sigma > SIGMA_WARN:
            self.log(f"warning: sigma {self.smoothed.sigma:g} is above the whole pixel range (pixels lie in [0, 1]): "
                     "the noisy copies are mostly noise, so the smoothed scores say little about the images. "
                     "Choose a smaller --sigma (0.12 is the default).")
        with _SignalGuard() as guard:
            with guard.deferred():
                plan = self._plan() if self.group.is_main else None
                plan = self.group.broadcast(plan)
            if "refused" in plan:
                raise RunRefused(plan["refused"])
            done = set(plan["done"])
            todo = [p for p in self.paths if p not in done]
            mine = todo[self.group.rank :: self.group.world_size]
            if self.group.is_main and plan["resumed"]:
                self.log(f"resuming {self.out}: {plan['resumed']} image(s) already certified there, {len(todo)} to go.")
            result = CertifyRun(resumed=plan["resumed"], is_main=self.group.is_main)
            rows = self._certify_share(mine, guard, result)
            if result.interrupted is not None:
                if not self.group.distributed:
                    with guard.deferred():
                        result.rows = self._finish(rows, result)
                self._tell_how_to_resume(result)
                return result
            with guard.deferred():
                gathered = self.group.gather((result.errors, result.certified, result.stopped))
                if self.group.is_main:
                    assert gathered is not None
                    result.errors = [e for errors, _, _ in gathered for e in errors]
                    result.certified = sum(count for _, count, _ in gathered)
                    result.stopped = next((stop for _, _, stop in gathered if stop), None)
                    if result.stopped:  # the rows stay where they are; --resume merges them
                        result.rows = rows
                        return result
                    result.rows = self._finish(rows, result)
                    if result.stopped:
                        return result
                    score_range = self.provenance.get("score_range", getattr(self.smoothed.model, "score_range", None))
                    for warning in (range_warning(result.rows, score_range),
                                    flatness_warning(result.rows, score_range=score_range)):
                        if warning:
                            self.log(f"warning: {warning}")
                else:
                    result.rows = []
        return result

    def _certify_share(self, mine: list[str], guard: _SignalGuard, result: CertifyRun) -> list[dict[str, Any]]:
        """Certify this process's images, appending each image's rows to its stream file."""
        rows: list[dict[str, Any]] = []
        stream = None
        if self.out is not None:
            target = self.home if not self.group.distributed else self.parts / f"rank-{self.group.rank}.jsonl"
            stream = open(target, "ab", buffering=0)  # unbuffered: a failed write leaves nothing pending
        label = "certifying" if not self.group.distributed else f"certifying (rank 0 of {self.group.world_size})"
        bar = tqdm(mine, desc=label, unit="img", disable=not (self.progress and self.group.is_main))
        result.remaining = len(mine)
        try:
            for path in bar:
                if guard.signum is not None:
                    break
                try:
                    image_rows = self._certify_one(path)
                except _ImageFailure as failure:
                    result.errors.append(str(failure))
                    result.remaining -= 1
                    self.log(f"error: {failure}")
                    continue
                with guard.deferred():
                    if stream is not None:
                        try:
                            _append(stream, _encode(image_rows, self.stream_fmt, self.file_columns).encode("utf-8"))
                        except OSError as err:
                            result.stopped = self._write_failed(stream, err, result)
                            self.log(f"error: {result.stopped}")
                            break
                    rows.extend(image_rows)
                    result.certified += 1
                    result.remaining -= 1
        except _Interrupted:
            pass
        finally:
            bar.close()
            if stream is not None:
                stream.close()
        result.interrupted = guard.signum
        return rows

    def _write_failed(self, stream: io.FileIO, err: OSError, result: CertifyRun) -> str:
        """What is kept, and how to go on, after a failed write of the stream file (one line)."""
        kept = result.certified + (0 if self.group.distributed else result.resumed)
        who = f"rank {self.group.rank}: " if self.group.distributed else ""
        where = f"{self.parts}{os.sep}" if self.group.distributed else str(self.home)
        reason = err.strerror or str(err)
        code = f" ({errno.errorcode[err.errno]})" if err.errno in errno.errorcode else ""
        return (f"{who}cannot write {stream.name}: {reason}{code}; the {kept} image(s) ({kept * len(self.radii)} "
                f"row(s)) written before are safe in {where}; free space and run the same command again with "
                "--resume to certify the rest.")

    def _certify_one(self, path: str) -> list[dict[str, Any]]:
        """The rows of one image; every failure becomes an :class:`_ImageFailure`."""
        start = time.perf_counter()
        try:
            if self.fmt == "csv" and ("\n" in path or "\r" in path):
                raise _ImageFailure(f"{path!r}: a line break in the path cannot go in a CSV row; rename the file "
                                    "or write .jsonl.")
            loaded = read_image(path, min_size=self.min_size, resize=self.resize)
            digest = file_sha256(path)
            x = loaded.image.unsqueeze(0)
            smoothed = self._smoothed_for(path, loaded.image)
            seed = None if self.smoothed.seed is None else image_noise_seed(self.smoothed.seed, digest)
            clean = self._clean_score(x, seed)
            if self.sequential is None:
                samples = smoothed.sample(x, seed=seed)
                records = [certify_samples(samples, r, smoothed.sigma, smoothed.alpha).to_records()[0]
                           for r in self.radii]
            else:
                records = [smoothed.certify_sequential(
                    x, r, self.sequential["delta"], n0=self.sequential["n0"], n_max=self.sequential["n_max"],
                    growth=self.sequential["growth"], spending=self.sequential["spending"],
                    futility=self.sequential["futility"], futility_error=self.sequential["futility_error"], seed=seed,
                ).to_records()[0] for r in self.radii]
        except _ImageFailure:
            raise
        except Exception as err:  # one image's failure, whatever it is, must not end the run
            raise _ImageFailure(self._failure_message(path, err)) from None
        if loaded.frames > 1:
            self.log(f"note: {path}: {loaded.frames} frames; only the first was certified (column frames).")
        seconds = round(time.perf_counter() - start, 4)
        rows = []
        for record in records:
            row: dict[str, Any] = {"path": path}
            row.update(record)
            row.update(self.settings)
            row.update(
                seconds=seconds,
                clean=clean,
                shift=row["median"] - clean,
                batch_size=smoothed.batch_size,
                resized_from="x".join(map(str, loaded.original_size)) if loaded.resized else None,
                frames=loaded.frames,
                image_sha256=digest,
            )
            row["reason"] = row_reason(row)
            row.update(self.extra.get(path, {}))
            row.update(self.environment)
            rows.append({column: row.get(column) for column in self.columns})
        return rows

    def _smoothed_for(self, path: str, image: torch.Tensor) -> SmoothedIQA:
        """The smoothed model with a batch lowered so the noise buffer stays within the limit."""
        per_copy = image.numel() * image.element_size()
        batch = min(self.smoothed.batch_size, self.max_noise_bytes // per_copy)
        height, width = image.shape[-2:]
        limit = _size(self.max_noise_bytes)
        if batch < 1:
            raise _ImageFailure(
                f"{path}: one noisy copy of this {height}x{width} image takes {_size(per_copy)}, more than "
                f"the noise-buffer limit of {limit}; resize the image or raise the limit (--max-noise-mb)."
            )
        if batch == self.smoothed.batch_size:
            return self.smoothed
        self.log(f"note: {path}: batch lowered from {self.smoothed.batch_size} to {batch} so that the noise buffer "
                 f"of this {height}x{width} image stays within {limit} (column batch_size).")
        lowered = copy.copy(self.smoothed)
        lowered.batch_size = batch
        return lowered

    def _clean_score(self, x: torch.Tensor, seed: list[int] | None) -> float:
        """f(x): the model's score of the image itself, no noise and no denoiser, in the run's
        precision (a randomized model's randomness seeded from the image's noise seed)."""
        model = self.smoothed.model
        device = self.smoothed.device_for(x)
        randomness = model_rng(seed if self.smoothed.randomized else None, -1, device)
        with torch.inference_mode(), _eval_mode(model), randomness, self.smoothed.autocast(device):
            return float(check_scores(model(x.to(device)), 1)[0])

    def _failure_message(self, path: str, err: Exception) -> str:
        if is_out_of_memory(err):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            n = self.sequential["n_max"] if self.sequential else self.smoothed.n
            if 8 * n > self.max_noise_bytes:  # the scores alone outgrow the whole noise buffer: n is the cause
                option = "--n-max" if self.sequential else "-n"
                message = (f"out of memory ({first}): the scores of n = {n} noise samples take {_size(8 * n)} "
                           f"(8 bytes each); lower {option}.")
            else:
                message = f"out of memory ({first}); lower --batch-size or --max-noise-mb, or resize the image."
        elif isinstance(err, ValueError):  # the library's own checks say what and how
            message = str(err)
        else:
            message = f"{type(err).__name__}: {err}"
        return message if message.startswith(path) else f"{path}: {message}"

    def _tell_how_to_resume(self, result: CertifyRun) -> None:
        name = signal.Signals(result.interrupted).name if result.interrupted is not None else "a signal"
        who = f"rank {self.group.rank}: " if self.group.distributed else ""
        if self.out is None:
            kept = "no --out was given, so they are only printed"
        elif self.group.distributed:
            kept = f"they are kept in {self.parts}{os.sep} until a resumed run merges them into {self.out}"
        else:
            kept = f"they are kept in {self.out}"
        hint = "; run the same command again with --resume to certify the rest" if self.out is not None else ""
        self.log(f"{who}interrupted by {name}: {result.certified} image(s) certified by this run, "
                 f"{result.remaining} not; {kept}{hint}.")

    # -- files -----------------------------------------------------------------------

    def _plan(self) -> dict[str, Any]:
        """Rank 0, before any image: open the output and, when resuming, keep its complete
        images (they move into the stream file, in input order); the parts of an earlier
        torchrun run are merged the same way. Returns the plan for every rank."""
        if self.out is None:
            return {"done": [], "resumed": 0}
        try:
            ancestor = next(folder for folder in self.out.parents if folder.exists())
            if not ancestor.is_dir():
                raise RunRefused(f"cannot write --out {self.out}: {ancestor} is a file, not a folder.")
            self.out.parent.mkdir(parents=True, exist_ok=True)
            try:
                note = self.lock.acquire()
            except LockHeld as err:
                raise RunRefused(f"--out {self.out}: {err}; wait for it to end, or choose another --out.") from None
            if note:
                self.log(f"note: {note}")
            if not self.resume and not self.overwrite:
                self._refuse_existing()
            images = self._changed_dropped(self._read_existing(check=True)) if self.resume else {}
            rows = self._ordered(images)
            self.file_columns = _merged_columns(self.columns, rows)
            home_fmt = "csv" if self.fmt == "csv" else "jsonl"
            _atomic_write(self.home, _encode(rows, home_fmt, self.file_columns, header=True))
            if self.fmt == "json" and not self.resume and self.out.exists():
                self.out.unlink()  # an older result must not look current
            _remove_parts(self.parts)
            if self.group.distributed:
                self.parts.mkdir()
        except RunRefused as err:
            return {"refused": str(err)}
        except OSError as err:
            return {"refused": f"cannot write --out {self.out}: {err.strerror or err} ({type(err).__name__})."}
        done = [p for p in self.paths if p in images]
        return {"done": done, "resumed": len(done)}

    def _refuse_existing(self) -> None:
        """Refuse to replace rows already on disk: the output, a .json run's partial file, parts."""
        found = [self.out, self.home, *(sorted(self.parts.glob("rank-*.jsonl")) if self.parts.is_dir() else [])]
        for path in found:
            if path.is_file() and path.stat().st_size > 0:
                what = "exists and is not empty" if path == self.out else "holds rows of an unfinished run of it"
                raise RunRefused(f"--out: {path} {what}; give --resume to continue it, or --overwrite to replace it "
                                 "(or choose another --out).")

    def _changed_dropped(self, images: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
        """The kept images without those of this run's input whose file changed since their rows
        were written (SHA-256 differs, or unreadable): those are certified again, with a note."""
        wanted = set(self.paths)
        kept = {}
        for path, image_rows in images.items():
            if path in wanted:
                try:
                    digest = file_sha256(path)
                except OSError:
                    digest = None
                if any(row.get("image_sha256") != digest for row in image_rows):
                    self.log(f"note: {path} changed since its rows were written (its SHA-256 differs from column "
                             "image_sha256); its rows are dropped and it is certified again.")
                    continue
            kept[path] = image_rows
        return kept

    def _finish(self, rows: list[dict[str, Any]], result: CertifyRun) -> list[dict[str, Any]]:
        """Rank 0, at the end: every complete image of the stream files into ``out``, in
        input order, written atomically; the partial file and the parts are removed."""
        if self.out is None:
            return rows
        try:
            merged = self._ordered(self._read_existing(check=False))
            columns = _merged_columns(self.columns, merged)
            text = json.dumps(merged, indent=2) + "\n" if self.fmt == "json" else _encode(merged, self.fmt, columns,
                                                                                         header=True)
            _atomic_write(self.out, text)
            if self.fmt == "json":
                self.home.unlink(missing_ok=True)
            _remove_parts(self.parts)
        except OSError as err:
            kept = " and ".join(str(p) + (os.sep if p == self.parts else "") for p in (self.home, self.parts)
                                if p.exists())
            result.stopped = (f"{self.out}: could not write the merged results ({err.strerror or err}); every row is "
                              f"kept in {kept} ({result.certified} image(s) certified by this run); free space and "
                              "run the same command again with --resume to write it (nothing is certified again).")
            self.log(f"error: {result.stopped}")
            return rows
        return merged

    def _read_existing(self, *, check: bool) -> dict[str, list[dict[str, Any]]]:
        """Complete images (path -> its rows) of the output, its partial file and its parts, first
        seen first. With ``check``, refuse rows made with other settings."""
        sources: list[tuple[str, Path]] = []
        if self.fmt == "json" and self.out.is_file():
            sources.append(("json", self.out))
        if self.home.is_file():  # the output itself for .csv and .jsonl
            sources.append(("csv" if self.fmt == "csv" else "jsonl", self.home))
        if self.parts.is_dir():
            sources.extend(("jsonl", p) for p in sorted(self.parts.glob("rank-*.jsonl")))
        images: dict[str, list[dict[str, Any]]] = {}
        differences: dict[str, set[str]] = {}
        for kind, source in sources:
            rows = _read_rows(source, kind)
            for row in rows:  # files written before the reason column: the reason is derived from the row
                if "reason" not in row:
                    row["reason"] = row_reason(row)
            if kind == "csv":  # a cell that reads as this run's setting gets the setting's value (and type)
                for row in rows:
                    row.update({k: v for k, v in self.settings.items()
                                if k in row and _text(row[k]) == self.expected[k]})
            complete, odd_radii = _complete_images(rows, self.radii_text)
            if check:
                for key, values in _differences(rows, self.expected).items():
                    differences.setdefault(key, set()).update(values)
                if odd_radii:
                    differences.setdefault("eps", set()).update(odd_radii)
            for path, image_rows in complete.items():
                images.setdefault(path, image_rows)
        if differences:
            wanted = {**self.expected, "eps": " ".join(self.radii_text)}
            listed = "; ".join(
                f"{key}: file {', '.join(sorted(v or '(none)' for v in values))}, this run {wanted[key] or '(none)'}"
                for key, values in differences.items()
            )
            raise RunRefused(
                f"--resume: {self.out} was made with other settings ({listed}). Rerun with the file's settings, "
                "choose another --out, or give --overwrite instead of --resume to start over."
            )
        return images

    def _ordered(self, images: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Rows of the input's images in input order, then those of other images as found."""
        order = {path: i for i, path in enumerate(self.paths)}
        paths = sorted(images, key=lambda p: order.get(p, len(order)))
        return [row for path in paths for row in images[path]]


# -- row files -----------------------------------------------------------------------


def read_results(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a finished results file (.csv, .jsonl or .json, as ``certiqa certify`` writes
    them), numbers parsed back; raises :class:`RunRefused` when it is not one."""
    path = check_output_path(path)
    if not path.is_file():
        raise RunRefused(f"{path}: no such results file.")
    return _read_rows(path, _FORMATS[path.suffix.lower()], resuming=False)


def _text(value: Any) -> str:
    """A value as its CSV cell reads: '' for None, JSON for lists and dicts, str otherwise
    (so a value read back from CSV and the same value in memory compare equal)."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(list(value) if isinstance(value, tuple) else value)
    return str(value)


def _encode(rows: list[dict[str, Any]], fmt: str, columns: list[str], *, header: bool = False) -> str:
    """Rows as CSV lines in ``columns`` order (with the header line if asked), or as JSON
    Lines, each line ending in '\\n'."""
    if fmt != "csv":
        return "".join(json.dumps(row) + "\n" for row in rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else _text(row[c]) for c in columns])
    return buffer.getvalue()


def _merged_columns(columns: list[str], rows: list[dict[str, Any]]) -> list[str]:
    """The run's columns, then any other column the rows have (kept, never dropped)."""
    known = set(columns)
    more = [c for row in rows for c in row if c not in known and not known.add(c)]
    return [*columns, *more]


def _typed(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row with the numbers and flags of :data:`RESULT_COLUMNS` parsed back; empty cells
    are None; every other cell stays text. A number column that does not read as one raises
    ValueError naming the column."""
    typed: dict[str, Any] = {}
    for key, value in row.items():
        if value == "" and key != "path":
            typed[key] = None
        elif key in _FLOATS or key in _INTS:
            try:
                typed[key] = int(value) if key in _INTS else float(value)
            except ValueError:
                if key != "resize":  # resize may also be a pair, [H, W]
                    raise ValueError(f"column {key}: {value!r} is not {'an integer' if key in _INTS else 'a number'}")
                typed[key] = value
        elif key == "certified":
            typed[key] = value == "True"
        else:
            typed[key] = value
    return typed


def _read_rows(path: Path, kind: str, *, resuming: bool = True) -> list[dict[str, Any]]:
    """The rows of a results file. A last line without its newline (a torn write) is
    dropped; any other line that is not a row is refused (with advice for ``--resume``
    when ``resuming``)."""

    def fix(advice: str) -> str:
        return advice if resuming else "."

    data = path.read_bytes()
    if kind == "json":
        try:
            rows = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise RunRefused(f"{path} is not a JSON results file ({err})"
                             + fix("; give --overwrite instead of --resume to replace it.")) from None
        if not isinstance(rows, list):
            raise RunRefused(f"{path} holds a JSON {type(rows).__name__}, not a list of rows"
                             + fix("; give --overwrite instead of --resume to replace it."))
        lines: list[str] = []
    else:
        try:
            lines = data[: data.rfind(b"\n") + 1].decode("utf-8").split("\n")[:-1]
        except UnicodeDecodeError:
            raise RunRefused(f"{path} is not UTF-8 text; it was not written by certiqa"
                             + fix(". Give --overwrite instead of --resume to replace it."))
        if kind == "csv":
            header, lines = (next(csv.reader(lines[:1])), lines[1:]) if lines else ([], [])
            if lines and not {"path", "eps"} <= set(header):
                raise RunRefused(f"{path} has no path and eps columns; it is not a certiqa results file" + fix(
                    ". Give --overwrite instead of --resume to replace it, or choose another --out."))
        rows = []
        for number, line in enumerate(lines, start=2 if kind == "csv" else 1):
            if kind == "csv":
                values = next(csv.reader([line]), [])
                row: Any = dict(zip(header, values)) if len(values) == len(header) else None
            else:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    row = None
            if not isinstance(row, dict):
                raise RunRefused(f"{path}, line {number}: not a row certiqa wrote" + fix(
                    ". Remove that line, or give --overwrite instead of --resume to start over."))
            try:
                rows.append(_typed(row) if kind == "csv" else _check_numbers(row))
            except ValueError as err:
                raise RunRefused(f"{path}, line {number}, {err}" + fix(
                    "; correct or remove that line, or give --overwrite instead of --resume to start over.")) from None
    for number, row in enumerate(rows if kind == "json" else [], start=1):
        try:
            _check_numbers(row)
        except (ValueError, TypeError) as err:
            raise RunRefused(f"{path}, row {number}, {err}" + fix(
                "; correct or remove that row, or give --overwrite instead of --resume to start over.")) from None
    for row in rows:
        if not isinstance(row, dict) or "path" not in row or "eps" not in row:
            raise RunRefused(f"{path} holds a row without path and eps; it is not a certiqa results file" + fix(
                ". Give --overwrite instead of --resume to replace it, or choose another --out."))
    return rows


def _check_numbers(row: dict[str, Any]) -> dict[str, Any]:
    """A JSON row whose number columns hold numbers (or null); ValueError naming the first that does not."""
    if not isinstance(row, dict):
        raise ValueError("not a row certiqa wrote (not an object)")
    for key, value in row.items():
        if (key in _FLOATS or key in _INTS) and key != "resize" and value is not None:
            if isinstance(value, bool) or not isinstance(value, int if key in _INTS else (int, float)):
                raise ValueError(f"column {key}: {value!r} is not {'an integer' if key in _INTS else 'a number'}")
    return row


def _complete_images(rows: list[dict[str, Any]], radii_text: list[str]) -> tuple[dict[str, list[dict]], set[str]]:
    """Group a file's rows into images (consecutive rows of one path). Returns the images with
    exactly one row per radius, and the radii of the images that are not (settings that
    differ), leaving out the last image, which a kill may have cut short."""
    groups: list[tuple[str, list[dict[str, Any]]]] = []
    for row in rows:
        if groups and groups[-1][0] == row["path"]:
            groups[-1][1].append(row)
        else:
            groups.append((row["path"], [row]))
    complete: dict[str, list[dict[str, Any]]] = {}
    odd: set[str] = set()
    for index, (path, image_rows) in enumerate(groups):
        radii = sorted(_text(r["eps"]) for r in image_rows)
        if radii == radii_text:
            complete.setdefault(path, image_rows)
        elif index < len(groups) - 1 or not set(radii) < set(radii_text) or len(radii) != len(set(radii)):
            odd.add(" ".join(radii))
    return complete, odd


def _differences(rows: list[dict[str, Any]], expected: dict[str, str]) -> dict[str, set[str]]:
    """Per setting, the values in ``rows`` that differ from ``expected`` (as text)."""
    found: dict[str, set[str]] = {}
    for row in rows:
        for key, want in expected.items():
            if row.get(key) is None and key in _UNRECORDED:  # an older file's row, or one merged from it
                got = _UNRECORDED[key]
            elif key in row or key in FAMILY_COLUMNS:  # an absent family column: no family level
                got = _text(row.get(key))
            else:
                got = "not recorded"
            if got != want:
                found.setdefault(key, set()).add(got)
    return found


def _size(nbytes: int) -> str:
    """A byte count for people: '22.5 KiB', '432.0 MiB', '2.0 GiB', '72.8 TiB'."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def _append(stream: io.FileIO, data: bytes) -> None:
    """Append ``data`` to an unbuffered file and fsync it. When a write fails (a full disk),
    the file is cut back to its length before, so it never ends in a torn row, and the
    error is raised."""
    start = os.fstat(stream.fileno()).st_size
    try:
        view = memoryview(data)
        while view:
            view = view[stream.write(view):]
        os.fsync(stream.fileno())
    except OSError:
        try:
            os.ftruncate(stream.fileno(), start)
        except OSError:
            pass  # a torn last line is dropped on --resume anyway
        raise


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _remove_parts(parts: Path) -> None:
    """Remove the part files of a torchrun run, and their folder when nothing else is in it."""
    if not parts.is_dir():
        return
    for part in parts.glob("rank-*.jsonl"):
        part.unlink()
    if not any(parts.iterdir()):
        parts.rmdir()


# -- summaries -----------------------------------------------------------------------


def _medians_and_cleans(rows: Iterable[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Per image (first row of each path): (smoothed median, clean score), where both are known."""
    images: dict[str, tuple[float, float]] = {}
    for row in rows:
        if row.get("clean") is not None and row.get("median") is not None:
            images.setdefault(row["path"], (float(row["median"]), float(row["clean"])))
    return images


def flatness_warning(rows: Iterable[dict[str, Any]], *, score_range: Sequence[float] | None,
                     ratio: float = FLAT_RATIO) -> str | None:
    """A warning when the images' smoothed medians span (max - min) less than ``ratio`` of the
    span of their clean scores, while those clean scores differ by a meaningful amount: at
    least :data:`FLAT_MIN_IMAGES` images whose clean scores span at least
    :data:`FLAT_MIN_SPAN` of the model's ``score_range`` (lo, hi). Without a score range
    there is no scale to call a span meaningful, and no warning; None otherwise too."""
    images = _medians_and_cleans(rows)
    if score_range is None or len(images) < FLAT_MIN_IMAGES:
        return None
    lo, hi = (float(v) for v in score_range)
    medians, cleans = zip(*images.values())
    clean_span, median_span = max(cleans) - min(cleans), max(medians) - min(medians)
    if clean_span < FLAT_MIN_SPAN * (hi - lo) or median_span >= ratio * clean_span:
        return None
    return (
        f"the smoothed medians of {len(images)} images span {median_span:.4g} while their clean scores span "
        f"{clean_span:.4g} ({median_span / clean_span:.1%}, under {ratio:.0%}): the smoothed model has gone flat, "
        "so its certified intervals say little about the model. Put a denoiser trained for this sigma in front "
        "(--denoiser), or choose a smaller --sigma with the sigma sweep (see the README)."
    )


def range_warning(rows: Iterable[dict[str, Any]], score_range: Sequence[float] | None) -> str | None:
    """A warning when a smoothed median lies outside the model's ``score_range`` (lo, hi) by more
    than :data:`RANGE_SLACK` of its width (the noise has carried the model off the images it
    was made for); None otherwise, or without a score range."""
    if score_range is None:
        return None
    lo, hi = (float(v) for v in score_range)
    slack = RANGE_SLACK * (hi - lo)
    images = _medians_and_cleans(rows)
    outside = {path: median for path, (median, _) in images.items() if not lo - slack <= median <= hi + slack}
    if not outside:
        return None
    path, median = max(outside.items(), key=lambda item: max(lo - item[1], item[1] - hi))
    return (
        f"the smoothed medians of {len(outside)} of {len(images)} images lie outside the model's score range "
        f"[{lo:g}, {hi:g}] (farthest: {path}, median {median:.4g}): the noise has carried the model off the images "
        "it was made for, so these certificates say little about it. Choose a smaller --sigma, or state the "
        "model's range with --score-range if it is wrong."
    )


def summarize_by_eps(rows: list[dict[str, Any]]) -> str:
    """Per radius: images certified, mean certified width, and (where rows have a
    ``score``) SROCC/PLCC of the smoothed median against it."""
    lines = ["| eps | images | certified | mean width | SROCC | PLCC |", "| --- | --- | --- | --- | --- | --- |"]
    for eps in sorted({r["eps"] for r in rows}):
        group = [r for r in rows if r["eps"] == eps]
        widths = [r["width"] for r in group if r["certified"]]
        mean_width = f"{sum(widths) / len(widths):.4f}" if widths else "-"
        corr = ["-", "-"]
        scored = [r for r in group if r.get("score") not in (None, "")]
        if len(scored) >= 3:
            try:
                medians, scores = [r["median"] for r in scored], [float(r["score"]) for r in scored]
                corr = [f"{srocc(medians, scores):.4f}", f"{plcc(medians, scores):.4f}"]
            except ValueError:  # constant medians or scores: correlation undefined
                pass
        lines.append(f"| {eps:g} | {len(group)} | {len(widths)} | {mean_width} | {corr[0]} | {corr[1]} |")
    return "\n".join(lines)


def row_reason(row: Mapping[str, Any]) -> str | None:
    """Why a result row is not certified (the ``reason`` column); None where it is certified,
    or where the row lacks what the reason is read from.

    Fixed n: :func:`certiqa.bounds.fixed_n_reason` of the row's n, sigma, eps and alpha. With
    ``--delta``: :func:`certiqa.bounds.decision_reason` of its decision and futility test."""
    if row.get("certified") is True:
        return None
    try:
        if row.get("decision"):
            futility, _, error = str(row.get("futility") or "proof").partition(" ")
            return bounds.decision_reason(str(row["decision"]), futility, float(error) if error else 0.0)
        return bounds.fixed_n_reason(int(row["n"]), float(row["sigma"]), float(row["eps"]), float(row["alpha"]))
    except (KeyError, TypeError, ValueError):
        return None


def model_line(row: Mapping[str, Any]) -> str | None:
    """``"model: SPEC (scores LO-HI, lower is better)"`` from a row's provenance columns
    (``model``, ``denoiser``, ``score_range``, ``lower_better``); None without a model."""
    if not row.get("model"):
        return None
    score_range, lower_better = row.get("score_range"), row.get("lower_better")
    if isinstance(score_range, str):  # read back from CSV
        try:
            score_range = json.loads(score_range)
        except json.JSONDecodeError:
            score_range = None
    if isinstance(lower_better, str):
        lower_better = {"True": True, "False": False}.get(lower_better)
    scale = (f"scores {score_range[0]:g}-{score_range[1]:g}" if isinstance(score_range, list) and len(score_range) == 2
             else "score range unknown")
    direction = {True: "lower is better", False: "higher is better"}.get(lower_better, "direction unknown")
    denoiser = f" + denoiser {row['denoiser']}" if row.get("denoiser") else ""
    return f"model: {row['model']}{denoiser} ({scale}, {direction})"


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width terminal table: path, eps, median, lower, upper, width, certified, clean
    (and n_used with --delta) and the reason a row is not certified, under the model line
    (:func:`model_line`) of the first row."""
    sequential = any(r.get("n_used") is not None for r in rows)
    header = ("path", "eps", "median", "lower", "upper", "width", "certified", "clean",
              *(("n_used",) if sequential else ()), "reason")
    body = [
        (
            str(r["path"]),
            f"{r['eps']:g}",
            f"{r['median']:.4f}",
            f"{r['lower']:.4f}",
            f"{r['upper']:.4f}",
            f"{r['width']:.4f}",
            "yes" if r["certified"] else "no",
            "-" if r.get("clean") is None else f"{r['clean']:.4f}",
            *((str(r.get("n_used", "-")),) if sequential else ()),
            r.get("reason") or "",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i in (0, len(header) - 1) else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(line, widths))).rstrip()
             for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    model = model_line(rows[0]) if rows else None
    return "\n".join([model, *lines] if model else lines)
