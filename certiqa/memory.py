"""Memory of model calls: out-of-memory errors, free memory and the peak of one call.

Used by :class:`certiqa.smoothing.SmoothedIQA` to pick the largest model batch that fits
a memory budget and to halve it when a call runs out of memory. On the CPU the peak is
the rise of the process's resident-set high-water mark (Linux ``/proc/self/status``
``VmHWM``, reset through ``/proc/self/clear_refs``); on CUDA it is the rise of
``torch.cuda.max_memory_allocated``. Where neither can be read, :func:`peak_bytes`
returns None and only the out-of-memory backoff applies.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from pathlib import Path
from typing import Callable

import torch

__all__ = ["is_out_of_memory", "free_bytes", "peak_bytes"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_MEMINFO = Path("/proc/meminfo")


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation failure: CUDA's ``torch.OutOfMemoryError``, Python's
    MemoryError, or the CPU allocator's RuntimeError ("DefaultCPUAllocator: can't allocate memory")."""
    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and ("can't allocate memory" in str(err) or "out of memory" in str(err))


def free_bytes(device: torch.device) -> int | None:
    """Memory a model call may still take on ``device``: CUDA's free memory plus what torch's
    caching allocator holds unused; on the CPU ``MemAvailable`` of ``/proc/meminfo``; None if unknown."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type == "cpu":
        try:
            for line in _MEMINFO.read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def _high_water_mark() -> int | None:
    """The process's peak resident set (bytes) since the last reset, or None off Linux."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _resident() -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None elsewhere (looked up once: find_library may run ldconfig)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None


def _trim() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``), so that memory
    freed earlier and reused by the call counts in the rise of the resident set."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def peak_bytes(call: Callable[[], object], device: torch.device) -> int | None:
    """Run ``call()`` once and return how much memory it took at its peak on ``device``
    beyond what was in use before it (bytes, >= 0), or None where that cannot be measured.

    CPU: returns the C heap's free pages to the system (glibc ``malloc_trim``), resets the
    process's high-water mark (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0) and reads
    the rise of ``VmHWM`` over ``VmRSS``; other threads allocating meanwhile count too.
    Memory the allocator kept from earlier calls and could not give back (e.g. inside
    transparent huge pages) is reused unseen: then the figure is an underestimate, which
    the out-of-memory backoff covers. CUDA: ``max_memory_allocated`` after
    ``reset_peak_memory_stats``, minus ``memory_allocated`` before (so torch's peak
    statistics of the device restart at this call).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        call()
        torch.cuda.synchronize(device)
        return max(0, int(torch.cuda.max_memory_allocated(device) - before))
    if device.type != "cpu":
        call()
        return None
    _trim()
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        call()
        return None
    before = _resident()
    call()
    peak = _high_water_mark()
    if before is None or peak is None:
        return None
    return max(0, peak - before)
