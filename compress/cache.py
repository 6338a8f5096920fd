"""Where compress keeps what it builds once (trained builtin models): ``$COMPRESS_CACHE`` or
``~/.cache/compress``."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """The cache folder joined with ``parts``, created if missing."""
    root = Path(os.environ.get("COMPRESS_CACHE", Path.home() / ".cache" / "compress"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
