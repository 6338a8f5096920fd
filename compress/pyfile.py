"""Load a callable from a user's Python file, as named by ``path/to/file.py:factory`` specs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable

from compress.errors import InputError


def split_file_spec(spec: str) -> tuple[Path, str] | None:
    """Split ``path/to/file.py:factory`` into (path, name); None when the spec is not of that form."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path.endswith(".py"):
        return None
    if not name.isidentifier():
        raise InputError(f"bad spec {spec!r}: {name!r} is not a Python name; write FILE.py:FACTORY")
    return Path(path), name


def load_callable(path: Path, name: str) -> Callable[..., Any]:
    """Import ``path`` as a fresh module and return its attribute ``name``, which must be callable."""
    if not path.is_file():
        raise InputError(f"file not found: {path}; check the path before ':{name}'")
    module_name = f"_compress_user_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise InputError(f"cannot import {path}: not a Python source file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # the user's code failed while importing; say where
        raise InputError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, name, None)
    if not callable(factory):
        available = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise InputError(
            f"{path} has no callable named {name!r}; callables defined there: "
            f"{', '.join(available) or 'none'}"
        )
    return factory


def call_factory(path: Path, name: str) -> Any:
    """Load ``name`` from ``path`` and call it with no arguments, reporting its failure in one line."""
    factory = load_callable(path, name)
    try:
        return factory()
    except Exception as exc:
        raise InputError(f"{path}:{name}() raised {type(exc).__name__}: {exc}") from exc
