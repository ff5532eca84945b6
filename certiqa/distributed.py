"""One certification run shared by the processes that torchrun starts (torch.distributed).

``torchrun --nproc-per-node K -m certiqa certify ...`` starts K processes and sets
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in each; :func:`join`
reads them and joins the default process group: NCCL with each process on
``cuda:LOCAL_RANK`` when the run is on CUDA, gloo on the CPU. Only small Python
objects travel between the processes (the plan of the run, error messages); the
rows go through files, so processes on several machines need a shared filesystem
for ``--out``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["Group", "join", "WAIT"]

# How long a process waits for the others at a collective: ranks finish their shares
# at different times (images differ in size), so this is generous.
WAIT = timedelta(hours=24)


@dataclass(frozen=True)
class Group:
    """This process's place in the run: ``rank`` of ``world_size`` processes,
    ``local_rank`` on its machine. ``Group()`` is a run of one process, where every
    collective is the identity. Use as a context manager: leaving it destroys the
    process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0, which plans the run, merges the files and prints the results."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (a picklable object)."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` in rank order on rank 0; None on the other ranks."""
        if not self.distributed:
            return [obj]
        boxes: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, boxes, dst=0)
        return boxes

    def __enter__(self) -> "Group":
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def join(device: torch.device) -> tuple[Group, torch.device]:
    """Join the run torchrun started, if any, and return this process's group and device.

    Without torchrun (WORLD_SIZE unset or 1) this is ``(Group(), device)``. Under
    torchrun a CUDA ``device`` becomes ``cuda:LOCAL_RANK`` (one GPU per process) and
    the group uses NCCL; otherwise gloo on the CPU.

    Raises:
        ValueError: LOCAL_RANK names a GPU this machine does not have, or the
            torchrun variables are missing.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Group(), device
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    except KeyError as err:
        raise ValueError(
            f"WORLD_SIZE={world_size} is set but {err.args[0]} is not; start the processes with torchrun "
            "(torchrun --nproc-per-node K -m certiqa certify ...) or unset WORLD_SIZE."
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ValueError(
                f"torchrun started local rank {local_rank}, but this machine has {count} CUDA device(s) "
                f"(one per process); use --nproc-per-node {count} or fewer, or --device cpu."
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=WAIT)
    return Group(rank=rank, world_size=world_size, local_rank=local_rank), device
