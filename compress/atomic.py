"""Atomic files: every file a command writes goes to a temporary name in the same folder, is
flushed to disk (fsync) and renamed into place (``os.replace``, atomic on POSIX), so a crash or
SIGKILL at any moment leaves either the old complete file or none, never a truncated one.

The temporary name keeps the suffix (``.model.1234.tmp.onnx``) so that writers that infer the
format from it (matplotlib, onnx) still work, and starts with a dot so listings skip it.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from compress.errors import InputError


def temporary_name(path: Path) -> Path:
    """The partial file ``path`` is written under before the rename."""
    return path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on normal exit it is fsynced and renamed to ``path``, on
    an exception it is removed. The parent folder is created if missing."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory; give a file path")
    partial = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield partial
        _fsync(partial)
        os.replace(partial, path)
        _fsync_folder(path.parent)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        partial.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """``path.write_text(text)`` (UTF-8), atomically."""
    with atomic_path(path) as partial:
        partial.write_text(text, encoding="utf-8")


def write_bytes(path: str | Path, data: bytes) -> None:
    """``path.write_bytes(data)``, atomically."""
    with atomic_path(path) as partial:
        partial.write_bytes(data)


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
