"""QAT+KD under ``torchrun --nproc_per_node 2`` (gloo) matches one process: every rank takes its
slice of the same global batches and DDP averages the rank-weighted gradients, so the step is
the full-batch step. In float64 only the order of summation differs: weights agree to 1e-9."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from compress.finetune.checkpoint import checkpoints

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import copy, json, os, sys
from pathlib import Path
import torch
from compress.finetune.spec import FinetuneSpec
from compress.finetune.train import finetune_
from compress.testing.tiny import tiny_convnet, tiny_data, trained
from tests.helpers.ste import quantize_and_prune_

torch.set_default_dtype(torch.float64)
data = tiny_data("conv", 96)
data.inputs = (data.inputs[0].double(),)
teacher = trained(tiny_convnet().double(), data, steps=100)
student = quantize_and_prune_(copy.deepcopy(teacher), bits=4, sparsity=0.25)
# batch 13 over 2 ranks: slices of 7 and 6 examples, so the rank weighting matters
spec = FinetuneSpec(mode="qat+kd", epochs=3, batch_size=13, checkpoint_every=5, sharpness_every=5, seed=1)
result = finetune_(student, teacher, data, spec, Path(sys.argv[2]))
if os.environ.get("RANK", "0") == "0":
    torch.save(student.state_dict(), sys.argv[1] + ".pt")
    Path(sys.argv[1] + ".json").write_text(json.dumps(result.to_dict()))
"""


def test_two_gloo_ranks_match_one_process(tmp_path: Path) -> None:
    script = tmp_path / "qat_kd.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    single = subprocess.Popen([sys.executable, str(script), str(tmp_path / "single"), str(tmp_path / "ck1")],
                              env=env, stderr=subprocess.PIPE, text=True)
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
              str(tmp_path / "double"), str(tmp_path / "ck2")]
    double = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert double.returncode == 0, double.stderr[-3000:]
    assert single.wait(timeout=300) == 0, single.stderr.read()[-3000:]

    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("single", "double"))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert abs(one["lr"] - two["lr"]) <= 1e-12 * one["lr"]
    assert max(abs(a - b) for a, b in zip(one["losses"], two["losses"])) <= 1e-10
    for a, b in zip(one["sharpness_history"], two["sharpness_history"]):
        assert abs(a["sharpness"] - b["sharpness"]) <= 1e-9 * a["sharpness"]
    expected, actual = (torch.load(tmp_path / f"{n}.pt", weights_only=True) for n in ("single", "double"))
    for name in expected:
        assert torch.allclose(expected[name], actual[name], rtol=0, atol=1e-9), name
    assert [p.name for p in checkpoints(tmp_path / "ck2")] == [p.name for p in checkpoints(tmp_path / "ck1")]
