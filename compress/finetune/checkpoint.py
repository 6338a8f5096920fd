"""Training checkpoints: written atomically, the last ``KEEP`` kept, the newest complete one read.

A checkpoint is ``step-NNNNNNNN.pt`` in the checkpoint directory, written to a temporary file,
flushed to disk and renamed over (``os.replace`` is atomic on POSIX), so a process killed at any
moment leaves either the previous set of checkpoints or the new one, never half a file. It holds
everything the rest of the run depends on: model, optimizer and scheduler state, the RNG states
(torch, Python's ``random``; numpy's is not used), the step with its epoch and position in the
data order, the learning rate and the sharpness/loss history.
"""

from __future__ import annotations

import pickle
import random
import re
from pathlib import Path

import torch

from compress.atomic import atomic_path, remove_dead_partials
from compress.errors import InputError

KEEP = 2
FORMAT = 1
_NAME = re.compile(r"^step-(\d{8})\.pt$")


def checkpoint_path(directory: Path, step: int) -> Path:
    return directory / f"step-{step:08d}.pt"


def checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints (temporary files excluded), oldest first."""
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in directory.iterdir() if (m := _NAME.match(path.name))]
    return [path for _, path in sorted(found)]


def save_checkpoint(directory: Path, step: int, state: dict) -> Path:
    """Write ``state`` (plus RNG states) for ``step`` atomically; delete all but the newest KEEP."""
    path = checkpoint_path(directory, step)
    payload = {**state, "format": FORMAT, "step": step, "rng": {"torch": torch.get_rng_state(),
                                                                 "python": random.getstate()}}
    with atomic_path(path) as partial:
        remove_dead_partials(directory)  # a killed run's half-written steps
        torch.save(payload, partial)
    for old in checkpoints(directory)[:-KEEP]:
        old.unlink()
    return path


def load_latest(directory: Path) -> dict | None:
    """The newest checkpoint that loads, with the RNG states restored; None when there is none."""
    for path in reversed(checkpoints(directory)):
        try:
            payload = torch.load(path, weights_only=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError):
            continue  # damaged outside our atomic writes: fall back to the previous one
        if payload.get("format") != FORMAT:
            raise InputError(f"{path} has checkpoint format {payload.get('format')}, expected {FORMAT}")
        torch.set_rng_state(payload["rng"]["torch"])
        random.setstate(_as_random_state(payload["rng"]["python"]))
        return payload
    return None


def _as_random_state(state: object) -> tuple:
    """``random.setstate`` wants tuples; a round trip through torch.save may give lists."""
    version, internal, gauss = state  # type: ignore[misc]
    return (version, tuple(internal), gauss)
