"""Whether a process id names a running process: a partial file whose writer is gone is garbage."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True while ``pid`` runs (signal 0 probes without sending); another user's process counts as
    alive. A reused pid reads as alive, which only ever keeps a file that could have gone."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
