"""Shared test helpers: run the CLI in-process and capture what a user would see."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from compress.cli.main import main


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """``cli("eval", ...)`` runs ``compress eval ...`` and returns exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        code = main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def factory_file(tmp_path: Path):
    """Write a Python file with the given source and return its path."""

    def write(source: str, name: str = "user_model.py") -> Path:
        path = tmp_path / name
        path.write_text(source)
        return path

    return write


@pytest.fixture
def single_thread() -> Iterator[None]:
    """One intra-op thread for tiny models: threads only add spin-waiting on a shared 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

