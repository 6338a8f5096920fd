"""Runs racing for one output directory, as real processes: exactly one holds the lock at any
moment; the others are refused in one line; nobody waits forever."""

from __future__ import annotations

import time
from pathlib import Path

from tests.helpers.processes import python

CONTENDER = """
import os, sys, time
from compress.errors import InputError
from compress.lock import output_lock

folder, start, rounds, hold = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
while time.time() < start:
    pass
won = refused = 0
for _ in range(rounds):
    try:
        with output_lock(folder):
            inside = os.open(os.path.join(folder, "inside"), os.O_CREAT | os.O_EXCL)  # fails if two are inside
            os.close(inside)
            time.sleep(hold)
            os.unlink(os.path.join(folder, "inside"))
            won += 1
    except InputError as exc:
        assert "\\n" not in str(exc) and "another run" in str(exc), str(exc)
        refused += 1
print(won, refused, flush=True)
"""


def contend(folder: Path, processes: int, rounds: int, hold: float) -> list[tuple[int, int]]:
    """(won, refused) of each process, all starting at the same instant."""
    start = time.time() + 3.0  # after every interpreter has started
    runs = [python(CONTENDER, str(folder), repr(start), str(rounds), repr(hold)) for _ in range(processes)]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs  # FileExistsError: two held the lock at once
    return [tuple(map(int, output.split())) for output in outputs]


def test_of_runs_starting_together_exactly_one_proceeds(tmp_path: Path) -> None:
    results = contend(tmp_path, processes=4, rounds=1, hold=1.0)
    assert sorted(results) == [(0, 1), (0, 1), (0, 1), (1, 0)]


def test_under_contention_the_lock_is_never_held_twice(tmp_path: Path) -> None:
    results = contend(tmp_path, processes=4, rounds=3000, hold=0.0)
    assert sum(won for won, _ in results) >= 3  # turns were taken, and every turn was exclusive
    assert not (tmp_path / "inside").exists() and not any(tmp_path.iterdir())
