"""Atomic outputs and the output-directory lock: a failed write leaves the old file or none, a
live run's directory is refused in one line, a dead run's lock is taken over."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from compress.atomic import atomic_path, write_text
from compress.errors import InputError
from compress.lock import LOCK_NAME, output_lock
from tests.helpers.processes import lock_held_by_another_process


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "plan.yaml"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as partial:
            partial.write_text("half of the new")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.yaml"]


def test_the_partial_keeps_the_suffix_and_is_hidden(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "model.onnx") as partial:
        assert partial.suffix == ".onnx" and partial.name.startswith(".") and partial.parent == tmp_path
        partial.write_bytes(b"x")
    assert (tmp_path / "model.onnx").read_bytes() == b"x"


def test_a_live_holder_is_refused_in_one_line(tmp_path: Path) -> None:
    with lock_held_by_another_process(tmp_path) as holder:
        with pytest.raises(InputError, match=f"another run \\(pid {holder.pid}\\)"):
            with output_lock(tmp_path):
                pass


def test_a_dead_holders_lock_is_taken_over_and_released(tmp_path: Path) -> None:
    with lock_held_by_another_process(tmp_path) as holder:
        pass  # killed: the kernel drops its lock, its lock file stays
    assert (tmp_path / LOCK_NAME).read_text().strip() == str(holder.pid)
    with output_lock(tmp_path) as lock:
        assert lock.read_text().strip() == str(os.getpid())
    assert not lock.exists()


def test_a_lock_file_nobody_holds_is_taken_over_even_if_its_pid_lives(tmp_path: Path) -> None:
    """A pid in the file is only for messages: pids are reused, the kernel's lock is not."""
    (tmp_path / LOCK_NAME).write_text(f"{os.getppid()}\n")
    with output_lock(tmp_path) as lock:
        assert lock.read_text().strip() == str(os.getpid())


TINY = """
import torch
from torch import nn

def model():
    return nn.Sequential(nn.Linear(4, 3)).eval()

def data():
    return torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 3
"""


def test_a_second_report_into_a_held_directory_is_refused(cli, factory_file, tmp_path: Path) -> None:
    factories = factory_file(TINY)
    evaluated = tmp_path / "eval.json"
    assert cli("eval", f"{factories}:model", "--data", f"{factories}:data", "--json", str(evaluated)).code == 0
    out = tmp_path / "report"
    out.mkdir()
    with lock_held_by_another_process(out) as holder:
        held = cli("report", "-o", str(out), "--eval", f"fp32={evaluated}")
        assert held.code == 2 and f"another run (pid {holder.pid})" in held.err
        assert len(held.err.strip().splitlines()) == 1 and not (out / "report.json").exists()
    assert cli("report", "-o", str(out), "--eval", f"fp32={evaluated}").code == 0  # the dead holder's lock is stale
    assert (out / "report.html").exists() and not (out / LOCK_NAME).exists()
