"""Partial files of interrupted atomic writes (``.NAME.PID.tmp.EXT``): the next writer of the same
file, or the next run that locks the folder, removes those whose writer is dead, never a live
writer's, nor files that are not partials."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from compress.atomic import remove_dead_partials, temporary_name, write_text
from compress.lock import output_lock
from tests.helpers.processes import python


def dead_pid() -> int:
    process = python("pass")
    process.wait()
    return process.pid


def partial_of(path: Path, pid: int) -> Path:
    """The partial name ``pid`` writes ``path`` under."""
    return path.with_name(temporary_name(path).name.replace(f".{os.getpid()}.", f".{pid}."))


def test_the_next_write_of_a_file_removes_its_dead_partials_only(tmp_path: Path) -> None:
    target, other = tmp_path / "plan.yaml", tmp_path / "plan.json"
    dead, live = dead_pid(), os.getppid()
    stale, alive_partial, other_stale = partial_of(target, dead), partial_of(target, live), partial_of(other, dead)
    for path in (stale, alive_partial, other_stale):
        path.write_text("half")
    write_text(target, "new\n")
    assert target.read_text() == "new\n" and not stale.exists()
    assert alive_partial.exists() and other_stale.exists()  # a live writer's; another file's


def test_locking_a_folder_removes_every_dead_partial_and_nothing_else(tmp_path: Path) -> None:
    dead = dead_pid()
    stale = [partial_of(tmp_path / name, dead) for name in ("model.onnx", "model.parity.json", "weights")]
    stale.append(tmp_path / f".step-000010.pt.{dead}.tmp")  # the fine-tuning checkpoints' form
    kept = [partial_of(tmp_path / "model.onnx", os.getppid()), tmp_path / ".hidden.tmp", tmp_path / "notes.1.tmp",
            tmp_path / f".x.{dead}.tmpfile", tmp_path / "model.onnx"]
    for path in stale + kept:
        path.write_text("x")
    with output_lock(tmp_path):
        assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in kept)


def test_a_killed_writers_partial_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    writer = """
import sys, time
from pathlib import Path
from compress.atomic import atomic_path

with atomic_path(Path(sys.argv[1]) / "model.onnx") as partial:
    partial.write_bytes(b"half an onnx")
    print(partial.name, flush=True)
    time.sleep(60)
"""
    first, second = python(writer, str(tmp_path)), python(writer, str(tmp_path))
    partials = [tmp_path / process.stdout.readline().decode().strip() for process in (first, second)]
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    try:
        assert remove_dead_partials(tmp_path, tmp_path / "model.onnx") == [partials[0]]
        assert not partials[0].exists() and partials[1].read_bytes() == b"half an onnx"
    finally:
        second.kill()
        second.wait()
    assert not (tmp_path / "model.onnx").exists()
