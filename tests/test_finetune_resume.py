"""Checkpoints: atomic, the last two kept, and resuming after SIGKILL gives bitwise the weights
of an uninterrupted run (same seed, same thread count)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from compress.errors import InputError
from compress.finetune.checkpoint import checkpoints, load_latest, save_checkpoint
from compress.finetune.spec import FinetuneSpec
from compress.finetune.train import finetune_
from compress.testing.tiny import tiny_data, tiny_mlp

CHECKPOINT_EVERY = 10

SCRIPT = """
import json, sys, time
from pathlib import Path
import torch
from torch import nn
from compress.finetune.spec import FinetuneSpec
from compress.finetune.train import finetune_
from compress.testing.tiny import tiny_data, tiny_mlp, trained

class Slowed(nn.Module):
    '''The student, slowed down per training step so the test can interrupt it mid-run.'''
    def __init__(self, delay):
        super().__init__()
        self.inner, self.delay = nn.Sequential(tiny_mlp(), nn.Dropout(0.2)), delay
    def forward(self, x):
        if self.training:
            print("step", flush=True)
            time.sleep(self.delay)
        return self.inner(x)

directory, weights, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
data = tiny_data("mlp", 96)
teacher = trained(tiny_mlp(), data, steps=50)
student = Slowed(delay)
spec = FinetuneSpec(mode="qat+kd", epochs=20, batch_size=16, checkpoint_every={every}, sharpness_every=25,
                    momentum=0.5, seed=3)
result = finetune_(student, teacher, data, spec, None if directory == "-" else Path(directory))
torch.save(student.state_dict(), weights)
print(json.dumps(result.to_dict()))
""".replace("{every}", str(CHECKPOINT_EVERY))


def _run(script: Path, directory: str, weights: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script), directory, str(weights), str(delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _result(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


def test_resume_after_sigkill_is_bitwise_exact(tmp_path: Path) -> None:
    script, directory = tmp_path / "finetune.py", tmp_path / "checkpoints"
    script.write_text(SCRIPT)
    uninterrupted = _run(script, "-", tmp_path / "uninterrupted.pt", delay=0.0)
    killed = _run(script, str(directory), tmp_path / "unused.pt", delay=0.02)
    deadline = time.monotonic() + 60
    while not checkpoints(directory) and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    started = killed.communicate()[0].count("step")
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be interrupted"
    newest = int(checkpoints(directory)[-1].stem.removeprefix("step-"))

    resumed = _run(script, str(directory), tmp_path / "resumed.pt", delay=0.0)
    full, again = _result(uninterrupted), _result(resumed)

    assert again["resumed_from_step"] == newest >= CHECKPOINT_EVERY
    assert started - 1 - newest <= CHECKPOINT_EVERY  # steps lost: at most one checkpoint interval
    expected, actual = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("uninterrupted", "resumed"))
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    for key in ("losses", "sharpness_history", "lr", "initial_sharpness"):
        assert again[key] == full[key], key
    assert len(checkpoints(directory)) == 2


def test_a_dead_runs_partial_checkpoints_are_removed_by_the_next_save(tmp_path: Path) -> None:
    import subprocess
    import sys

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, live = int(finished.stdout), os.getpid()
    (tmp_path / f".step-00000020.{dead}.tmp.pt").write_bytes(b"half a file")
    (tmp_path / f".step-00000030.{live}.tmp.pt").write_bytes(b"being written")
    save_checkpoint(tmp_path, 5, {"value": torch.tensor(5)})
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".step-00000030.{live}.tmp.pt", "step-00000005.pt"]


def test_last_two_kept_temporary_and_damaged_files_skipped(tmp_path: Path) -> None:
    for step in (5, 10, 15):
        save_checkpoint(tmp_path, step, {"value": torch.tensor(step)})
    assert [p.name for p in checkpoints(tmp_path)] == ["step-00000010.pt", "step-00000015.pt"]
    (tmp_path / ".step-00000020.pt.123.tmp").write_bytes(b"half a file")
    assert load_latest(tmp_path)["step"] == 15
    checkpoints(tmp_path)[-1].write_bytes(b"damaged outside our writes")
    assert int(load_latest(tmp_path)["value"]) == 10


def test_checkpoints_of_another_spec_are_refused(tmp_path: Path) -> None:
    data = tiny_data("mlp", 32)
    spec = FinetuneSpec(mode="qat", max_steps=2, batch_size=8, checkpoint_every=1, lr=0.1, sharpness_every=0)
    finetune_(tiny_mlp(), None, data, spec, tmp_path)
    with pytest.raises(InputError, match="different finetune spec"):
        finetune_(tiny_mlp(), None, data, FinetuneSpec(**{**spec.to_dict(), "lr": 0.2}), tmp_path)
