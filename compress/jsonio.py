"""Write machine-readable results (``--json PATH``) atomically, so a crash never leaves half a file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from compress.errors import InputError


def write_json(path: str | Path, payload: object) -> None:
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a directory; give a file path for the JSON")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(partial, path)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror}") from exc
