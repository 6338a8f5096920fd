"""One run per output directory: a lock file holding the writer's pid, created exclusively.

A second run into a directory whose lock names a live process is refused in one line; a lock
left by a dead process (SIGKILL, power loss) is stale and taken over.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from compress.errors import InputError

LOCK_NAME = ".compress.lock"


@contextmanager
def output_lock(folder: str | Path) -> Iterator[Path]:
    """Hold ``folder``'s lock (creating the folder) while the block runs; released on exit."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder} exists and is not a directory")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {folder}: {exc.strerror or exc}") from exc
    lock = folder / LOCK_NAME
    _acquire(lock)
    try:
        yield lock
    finally:
        if _holder(lock) == os.getpid():
            lock.unlink(missing_ok=True)


def _acquire(lock: Path) -> None:
    """Create ``lock`` with our pid; a stale lock (dead holder) is removed and retried once."""
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(lock)
            if holder is not None and holder != os.getpid() and _alive(holder):
                raise InputError(f"{lock.parent} is being written by another run (pid {holder}); wait for it "
                                 "to finish or choose another output directory") from None
            lock.unlink(missing_ok=True)  # stale: its writer is gone
            continue
        with os.fdopen(descriptor, "w") as handle:
            handle.write(f"{os.getpid()}\n")
        return
    raise InputError(f"{lock.parent}: another run took the lock at the same moment; try again")


def _holder(lock: Path) -> int | None:
    """The pid in ``lock``; None when it is missing, empty or unreadable (a half-written lock)."""
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True
