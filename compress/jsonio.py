"""Write machine-readable results (``--json PATH``) atomically, so a crash never leaves half a file."""

from __future__ import annotations

import json
from pathlib import Path

from compress.atomic import write_text


def json_text(payload: object) -> str:
    """``payload`` as ``write_json`` writes it: indented JSON with sorted keys, a final newline."""
    return json.dumps(payload, indent=2, sort_keys=True) + "\n"


def write_json(path: str | Path, payload: object) -> None:
    """``json_text(payload)`` at ``path`` (``compress.atomic``)."""
    write_text(path, json_text(payload))
