"""Real processes for the lock and kill tests: the checkout on PYTHONPATH, one torch thread."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

HOLD = """
import sys, time
from compress.lock import output_lock

with output_lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


def python(code: str, *args: str, **popen) -> subprocess.Popen:
    """``python -c code args`` with stdout piped."""
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, env=ENV, **popen)


@contextmanager
def lock_held_by_another_process(folder: Path) -> Iterator[subprocess.Popen]:
    """A live process holding ``folder``'s output lock for the block (killed after it)."""
    holder = python(HOLD, str(folder))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()
