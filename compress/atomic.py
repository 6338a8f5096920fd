"""Atomic files: every file a command writes goes to a temporary name in the same folder, is
flushed to disk (fsync) and renamed into place (``os.replace``, atomic on POSIX), so a crash or
SIGKILL at any moment leaves either the old complete file or none, never a truncated one.

The temporary name keeps the suffix (``.model.1234.tmp.onnx``) so that writers that infer the
format from it (matplotlib, onnx) still work, starts with a dot so listings skip it, and names the
writer's pid: a SIGKILL leaves the partial behind, and the next writer of the same file (or the
next run that locks the folder, ``compress.lock``) removes partials whose writer is no longer
alive, never a live writer's.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from compress.errors import InputError
from compress.processes import alive

PARTIAL = re.compile(r"\.(?P<stem>.+)\.(?P<pid>[1-9]\d{0,8})\.tmp(?P<suffix>\.[^.]+)?")  # also .NAME.PID.tmp


def temporary_name(path: Path) -> Path:
    """The partial file ``path`` is written under before the rename."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


@contextmanager
def atomic_path(path: str | Path, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on normal exit it is fsynced and renamed to ``path``, on
    an exception it is removed. The parent folder is created if missing. With ``replace=False``
    the finished file is hard-linked into place instead (``link`` fails when the name exists), so
    of two runs writing the same new file at once the second is refused, never silently replaces
    the first's work."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory; give a file path")
    partial = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_partials(path.parent, path)
        yield partial
        _fsync(partial)
        _move_into_place(partial, path, replace)
        _fsync_folder(path.parent)
    except FileExistsError as exc:
        raise InputError(f"{path} was created by another run meanwhile; it was left as it is") from exc
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)


def remove_dead_partials(folder: str | Path, target: str | Path | None = None) -> list[Path]:
    """Delete the partial files in ``folder`` (of ``target`` only, when given) whose writer's pid is
    not alive; returns them. Files of live writers, and names that are not partials, stay."""
    folder = Path(folder)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = PARTIAL.fullmatch(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        if target is not None and (match["stem"], match["suffix"] or "") != (Path(target).stem, Path(target).suffix):
            continue
        if int(match["pid"]) != os.getpid() and not alive(int(match["pid"])):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed


def write_text(path: str | Path, text: str, replace: bool = True) -> None:
    """``path.write_text(text)`` (UTF-8), atomically; ``replace=False`` never replaces an existing
    file (``atomic_path``)."""
    with atomic_path(path, replace) as partial:
        partial.write_text(text, encoding="utf-8")


def write_bytes(path: str | Path, data: bytes) -> None:
    """``path.write_bytes(data)``, atomically."""
    with atomic_path(path) as partial:
        partial.write_bytes(data)


def _move_into_place(partial: Path, path: Path, replace: bool) -> None:
    """Rename ``partial`` to ``path``; without ``replace``, link it (FileExistsError if taken)."""
    if replace:
        os.replace(partial, path)
        return
    try:
        os.link(partial, path)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then rename
        if path.exists():
            raise FileExistsError(path) from None
        os.replace(partial, path)
        return
    partial.unlink()


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (a no-op where folders cannot be opened)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
