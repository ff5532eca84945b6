"""Gaussian noise for smoothing, drawn from independent seeded streams.

A torch CPU generator is sequential: one stream draws about 2 ms of noise per
512x384 RGB image on a 2-core CPU, as much as a sixth of a CNNIQA forward pass.
:class:`GaussianStreams` splits every fill into ``STREAMS`` contiguous blocks of
rows, block s drawn from stream s, and on the CPU draws the blocks in parallel
threads. Each stream is its own ``torch.Generator`` on the target device, seeded
with a word of ``numpy.random.SeedSequence(seed)``, so the noise depends on the
seed, the device and the sizes of the fills, never on the number of threads.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Sequence

import numpy as np
import torch

__all__ = ["GaussianStreams", "STREAMS"]

STREAMS = 8


class GaussianStreams:
    """``streams`` independent N(0, 1) generators on ``device``, seeded from one seed.

    Args:
        seed: an int >= 0 or a non-empty sequence of them (the entropy of numpy's
            ``SeedSequence``), or None for fresh OS entropy.
        device: where the noise is drawn (CPU or CUDA).
        streams: number of independent generators; part of what the noise depends on.

    Use as a context manager (it owns a thread pool on the CPU) and call
    :meth:`normal_` on each buffer to fill.
    """

    def __init__(self, seed: int | Sequence[int] | None, device: torch.device | str, streams: int = STREAMS) -> None:
        if isinstance(streams, bool) or not isinstance(streams, int) or streams < 1:
            raise ValueError(f"streams must be a positive int, got {streams!r}.")
        entropy = list(seed) if isinstance(seed, (list, tuple)) else [seed]
        valid = all(isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in entropy)
        if seed is not None and not (entropy and valid):
            raise ValueError(f"seed must be an int >= 0, a non-empty sequence of such ints, or None, got {seed!r}.")
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())  # tensors report an index
        words = np.random.SeedSequence(seed).generate_state(streams, np.uint32)
        self.generators = [torch.Generator(device=self.device).manual_seed(int(w)) for w in words]
        workers = min(streams, torch.get_num_threads()) if self.device.type == "cpu" else 1
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="certiqa-noise") if workers > 1 else None

    def __enter__(self) -> "GaussianStreams":
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Shut the thread pool down (idempotent)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def normal_(self, out: torch.Tensor, std: float = 1.0) -> torch.Tensor:
        """Fill ``out`` (R, ...) in place with i.i.d. N(0, std^2) entries and return it.

        Rows are split into ``streams`` contiguous blocks (some empty when R < streams);
        block s is drawn from generator s. ``out`` must be contiguous and on ``device``.
        """
        if out.device != self.device or not out.is_contiguous():
            raise ValueError(
                f"out must be a contiguous tensor on {self.device}, got device {out.device} "
                f"(contiguous={out.is_contiguous()}); allocate it with torch.empty(..., device={str(self.device)!r})."
            )
        blocks = [(b, g) for b, g in zip(out.tensor_split(len(self.generators)), self.generators) if b.numel()]
        if self._pool is None:
            for block, generator in blocks:
                block.normal_(0.0, std, generator=generator)
        else:
            inference = torch.is_inference_mode_enabled()  # thread-local: carry the caller's mode over

            def draw(item: tuple[torch.Tensor, torch.Generator]) -> None:
                with torch.inference_mode(inference):
                    item[0].normal_(0.0, std, generator=item[1])

            list(self._pool.map(draw, blocks))  # waits, and re-raises a worker's error
        return out
