"""SIGKILL of the real ``compress plan``, ``apply`` and ``export`` processes (builtin:mnist-cnn on
96 random digits) at seeded random moments. After every kill the output directory holds only
complete files equal to an uninterrupted run's (never a truncated one), plus at most the dead
run's lock file and partials; re-running the same command takes the lock over, removes the
partials and writes outputs equal to the uninterrupted run's (JSON payloads without timings,
tensors, YAML text, ONNX bytes). Seed 0 of apply and export runs by default; 20 seeds per command with -m slow."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from compress.atomic import PARTIAL
from compress.lock import LOCK_NAME, holder
from tests.helpers.processes import ENV

SEEDS = 20
DEFAULT_SEEDS = 1
# wall-clock fields, and the checkpoint JSON's count of its own bytes (which holds the output
# folder's path and the timings' digits): the only ones two identical runs may differ in
TIMINGS = {"seconds", "info_bytes", "total_bytes"}

DATA = """
import torch

def digits():
    g = torch.Generator().manual_seed(0)
    return torch.rand(96, 1, 28, 28, generator=g), torch.randint(0, 10, (96,), generator=g)
"""

RECIPE = """
version: 1
model: {{spec: "builtin:mnist-cnn"}}
data: {{calibration: "{data}:digits", calibration_samples: 64}}
quantization:
  layers:
    default: {{weight_bits: 8, act_bits: 8, calibrator: minmax}}
"""


@dataclass
class Command:
    """``argv(out)`` writes everything under the folder ``out``; ``reference`` holds an
    uninterrupted run's outputs, which took ``seconds``."""

    argv: Callable[[Path], list[str]]
    reference: Path
    seconds: float


def run(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "compress.cli.main", *argv], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def completed(argv: list[str]) -> float:
    """Run to the end (exit 0 required); the seconds it took."""
    began = time.monotonic()
    process = run(argv)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err.decode()
    return time.monotonic() - began


@pytest.fixture(scope="module")
def commands(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Command]:
    """``commands(name)``: the command and its uninterrupted outputs, run on first use (export
    reads apply's reference checkpoint)."""
    root = tmp_path_factory.mktemp("kill")
    (root / "digits.py").write_text(DATA)
    (root / "recipe.yaml").write_text(RECIPE.format(data=root / "digits.py"))
    argvs = {
        "apply": lambda out: ["apply", str(root / "recipe.yaml"), "-o", str(out), "--force"],
        "export": lambda out: ["export", str(reference("apply").reference), "-o", str(out), "--json",
                               str(out / "export.json"), "--force"],
        "plan": lambda out: ["plan", "builtin:mnist-cnn", "--data", f"{root / 'digits.py'}:digits",
                             "--max-samples", "64", "--budget", "avg_bits=6", "--bits", "4,8,fp32",
                             "--sensitivity", "trace", "--verify", "1", "--max-products", "4", "--slq-runs", "1",
                             "--top-k", "1", "--deflation-steps", "0", "-o", str(out / "plan.yaml"),
                             "--json", str(out / "plan.json"), "--force"],
    }
    found: dict[str, Command] = {}

    def reference(name: str) -> Command:
        if name not in found:
            argv, out = argvs[name], root / f"reference-{name}"
            found[name] = Command(argv, out, completed(argv(out)))
        return found[name]

    return reference


def files(folder: Path) -> dict[str, Path]:
    """Every file under ``folder`` by relative name (hidden ones included)."""
    return {str(path.relative_to(folder)): path for path in sorted(folder.rglob("*")) if path.is_file()}


def payload(path: Path, folder: Path) -> object:
    """What a file says, for comparing two runs: JSON without timings and with ``folder`` written
    as OUT, tensors, or the bytes."""
    if path.suffix == ".json":
        return _without_timings(json.loads(path.read_text().replace(str(folder), "OUT")))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return {name: tensor.tolist() for name, tensor in load_file(str(path)).items()}
    return path.read_bytes()


def _without_timings(value: object) -> object:
    if isinstance(value, dict):
        return {key: _without_timings(item) for key, item in value.items() if key not in TIMINGS}
    if isinstance(value, list):
        return [_without_timings(item) for item in value]
    return value


def assert_equal_outputs(out: Path, reference: Path, names: dict[str, Path]) -> None:
    expected = files(reference)
    assert set(names) <= set(expected), sorted(set(names) - set(expected))
    for name, path in names.items():
        assert payload(path, out) == payload(expected[name], reference), f"{name} differs from the uninterrupted run's"


def assert_only_complete_files_and_the_dead_runs_leftovers(out: Path, reference: Path, pid: int) -> None:
    written = files(out)
    visible = {name: path for name, path in written.items() if not path.name.startswith(".")}
    assert_equal_outputs(out, reference, visible)  # complete: equal to the uninterrupted run's files
    for name, path in written.items():
        if name in visible:
            continue
        partial = PARTIAL.fullmatch(path.name)
        assert path.name == LOCK_NAME or (partial and int(partial["pid"]) == pid), f"unexpected file {name}"
    if (out / LOCK_NAME).exists():
        assert holder(out / LOCK_NAME) in (pid, None)  # None: killed between creating and writing it


def cases() -> list:
    """(command, seed): the first seeds of apply and export by default; plan (about 20 s a run)
    and the rest with -m slow."""
    return [pytest.param(name, seed, marks=[pytest.mark.slow] if seed >= DEFAULT_SEEDS or name == "plan" else [])
            for name in ("apply", "export", "plan") for seed in range(SEEDS)]


@pytest.mark.parametrize("name, seed", cases())
def test_sigkill_then_rerun_gives_the_uninterrupted_outputs(commands: Callable[[str], Command], tmp_path: Path,
                                                            name: str, seed: int) -> None:
    command, out = commands(name), tmp_path / "out"
    out.mkdir()
    process = run(command.argv(out))
    delay = random.Random(f"{name}-{seed}").uniform(0.2, 1.0) * command.seconds
    time.sleep(delay)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()
    assert process.returncode in (-signal.SIGKILL, 0)  # 0: it finished before the kill
    assert_only_complete_files_and_the_dead_runs_leftovers(out, command.reference, process.pid)
    print(f"{name} seed {seed}: killed after {delay:.1f} s of {command.seconds:.1f}, left {sorted(files(out))}")
    completed(command.argv(out))
    after = files(out)
    assert sorted(after) == sorted(files(command.reference))  # no lock, no partial left
    assert_equal_outputs(out, command.reference, after)


def test_a_truncated_file_would_be_caught(commands: Callable[[str], Command], tmp_path: Path) -> None:
    """The check sees a file cut short (what a non-atomic write leaves after a kill)."""
    reference = commands("apply").reference
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    weights = out / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(Exception):
        assert_only_complete_files_and_the_dead_runs_leftovers(out, reference, pid=0)
    (out / "compressed.json").write_text((reference / "compressed.json").read_text()[:-40])
    weights.write_bytes((reference / "weights.safetensors").read_bytes())
    with pytest.raises(json.JSONDecodeError):
        assert_only_complete_files_and_the_dead_runs_leftovers(out, reference, pid=0)
