"""An exclusive lock on a run's output: one run writes a results file (and its partial
file and parts folder) at a time.

The lock is an OS lock (``fcntl.flock``) on ``OUT.lock``, beside the output. The
kernel releases it when the holding process ends, however it ends (SIGKILL
included), so a lock is never stale: a lock file whose flock is free was left by a
run that has ended, whatever pid it records, and the next run takes it over. The
pid, host and start time written into the file serve only the message that
refuses a second run; a pid reused by another process, or a host that reboots,
therefore neither blocks nor fools the lock. On a shared filesystem the lock holds
across machines where that filesystem supports flock (NFS does, through its lock
manager); where it does not (``ENOLCK``, ``EOPNOTSUPP``), the run goes on without a
lock and says so.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

__all__ = ["OutputLock", "LockHeld", "lock_path"]

_UNSUPPORTED = (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL)


class LockHeld(RuntimeError):
    """Another live process holds the lock; the message names it (pid, host, start)."""


def lock_path(out: str | os.PathLike) -> Path:
    """The lock file of an output: ``OUT.lock`` in the same folder."""
    out = Path(out)
    return out.with_name(out.name + ".lock")


def _describe(record: str) -> str:
    """'pid 123 on host h, started 2026-12-05 02:10:00 UTC' from a lock file's text ('' if unreadable)."""
    try:
        info = json.loads(record)
        return f"pid {int(info['pid'])} on host {info['host']}, started {info['started']}"
    except (ValueError, KeyError, TypeError):
        return ""


class OutputLock:
    """Hold ``OUT.lock`` exclusively from :meth:`acquire` to :meth:`release`.

    ``acquire`` raises :class:`LockHeld` when a live process holds it, and returns
    a note when it took over a lock file left by a run that has ended (or when the
    filesystem cannot lock), else None. ``release`` removes the file.
    """

    def __init__(self, out: str | os.PathLike) -> None:
        self.path = lock_path(out)
        self._fd: int | None = None

    def acquire(self) -> str | None:
        while True:  # retried when another run removed the file between our open and our flock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe(os.pread(fd, 4096, 0).decode("utf-8", "replace")) or "pid unknown: it is starting"
                os.close(fd)
                raise LockHeld(f"another run is writing this output ({holder}; lock {self.path})") from None
            except OSError as err:
                os.close(fd)
                if err.errno in _UNSUPPORTED:
                    self.path.unlink(missing_ok=True)  # of no use where nothing can lock it
                    return (f"{self.path.parent} does not support file locks ({err.strerror}); make sure no other "
                            "run writes this output at the same time.")
                raise
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd  # held from here on: release() lets it go even if the record cannot be written
        previous = _describe(os.pread(fd, 4096, 0).decode("utf-8", "replace"))
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        if previous:
            return f"took over the lock {self.path} left by a run that has ended ({previous})."
        return None

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still held: a waiting run re-checks the inode
        finally:
            os.close(self._fd)
            self._fd = None
