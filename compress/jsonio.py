"""Write machine-readable results (``--json PATH``) atomically, so a crash never leaves half a file."""

from __future__ import annotations

import json
from pathlib import Path

from compress.atomic import write_text


def write_json(path: str | Path, payload: object) -> None:
    """``payload`` as indented JSON with sorted keys at ``path`` (``compress.atomic``)."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")
