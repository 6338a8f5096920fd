"""One run per output directory: an exclusive advisory lock (``flock``) on a lock file in it,
which also names the holder's pid for the message a second run gets.

The kernel drops the lock when its holder exits, however it exits (SIGKILL, crash), so a dead
run's lock file is simply taken over (no guessing from pids, which get reused); a second live run
into the directory is refused in one line. Two runs starting at the same moment race on the
``flock`` call, which exactly one wins. Taking the lock also removes partial files left in the
directory by writers that died (``compress.atomic.remove_dead_partials``).
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from compress.atomic import remove_dead_partials
from compress.errors import InputError

LOCK_NAME = ".compress.lock"
ATTEMPTS = 100  # reopenings when the lock file is replaced between our open and our flock


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
    descriptor = _acquire(lock)
    try:
        remove_dead_partials(folder)
        yield lock
    finally:
        lock.unlink(missing_ok=True)  # while still holding it: a waiting opener sees a new file
        os.close(descriptor)


def holder(lock: Path) -> int | None:
    """The pid written in ``lock``; None when it is missing, empty or unreadable."""
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def _acquire(lock: Path) -> int:
    """An open descriptor of ``lock`` holding its exclusive flock, with our pid written in it."""
    for _ in range(ATTEMPTS):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as exc:
            raise InputError(f"cannot create the lock file {lock}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            pid = holder(lock)
            by = "another run" if pid is None else f"another run (pid {pid})"
            raise InputError(f"{lock.parent} is being written by {by}; wait for it to finish or choose "
                             "another output directory") from None
        if _still_there(descriptor, lock):
            os.ftruncate(descriptor, 0)
            os.write(descriptor, f"{os.getpid()}\n".encode())
            return descriptor
        os.close(descriptor)  # the holder released (unlinked) it between our open and flock: reopen
    raise InputError(f"{lock.parent}: could not take the lock {lock.name}; try again")


def _still_there(descriptor: int, lock: Path) -> bool:
    """Whether ``lock`` still names the file ``descriptor`` has open."""
    try:
        on_disk = lock.stat()
    except FileNotFoundError:
        return False
    opened = os.fstat(descriptor)
    return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)
