"""Bad input of issues 13 and 16 beyond the table: data smaller than one batch (refused only where
a batch is truly needed: fine-tuning), ``--max-samples 0``, outputs that are not differentiable
(for verbs that follow the gradient), integer outputs and outputs without a feature axis. Each
refusal is one line and exit status 2; what can work does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FACTORIES = '''
import torch
from torch import nn

def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).eval()

class Wrapped(nn.Module):
    def __init__(self, head):
        super().__init__()
        self.inner, self.head = model(), head
    def forward(self, x):
        return self.head(self.inner(x))

def detached():
    return Wrapped(lambda y: y.detach()).eval()

def argmax():
    return Wrapped(lambda y: y.argmax(dim=1, keepdim=True)).eval()

def scalar():
    return Wrapped(lambda y: y[:, 0]).eval()

def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(24, 4, generator=g), torch.randint(0, 3, (24,), generator=g)

def three():
    x, y = data()
    return x[:3], y[:3]

def unlabeled():
    return data()[0], None
'''

RECIPE = """
version: 1
model: {{spec: "{factories}:{model}"}}
data: {{calibration: "{factories}:{data}"}}
quantization:
  layers:
    default: {{weight_bits: 8, act_bits: 8}}
"""
FINETUNE = "finetune: {mode: kd, max_steps: 2, lr: 0.001, batch_size: 8}\n"


@pytest.fixture
def factories(factory_file) -> Path:
    return factory_file(FACTORIES, "inputs.py")


def one_line_error(result, *words: str) -> None:
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and ": error: " in lines[0], result.err
    for word in words:
        assert word in lines[0], (word, lines[0])


def recipe(tmp_path: Path, factories: Path, model: str, data: str, finetune: bool) -> str:
    path = tmp_path / f"{model}-{data}-{finetune}.yaml"
    path.write_text(RECIPE.format(factories=factories, model=model, data=data) + (FINETUNE if finetune else ""))
    return str(path)


def test_curvature_on_data_smaller_than_a_batch_uses_all_of_it(cli, factories: Path, tmp_path: Path) -> None:
    """3 examples, batch 128, max_samples 1000: the figures are over the 3 examples, the same as
    with no limit (the data part of the error is zero: nothing was subsampled)."""
    figures = []
    for limit in ((), ("--max-samples", "1000")):
        out = tmp_path / f"curvature{len(limit)}.json"
        result = cli("curvature", f"{factories}:model", "--data", f"{factories}:three", "--batch-size", "128",
                     "--max-products", "8", "--json", str(out), *limit)
        assert result.code == 0, result.err
        figures.append(json.loads(out.read_text()))
    assert figures[0]["num_samples"] == figures[1]["num_samples"] == 3
    assert figures[0]["trace"] == figures[1]["trace"] and figures[1]["trace_stderr_data"] == 0


def test_apply_without_fine_tuning_works_on_data_smaller_than_a_batch(cli, factories: Path, tmp_path: Path) -> None:
    result = cli("apply", recipe(tmp_path, factories, "model", "three", finetune=False), "-o", str(tmp_path / "out"))
    assert result.code == 0, result.err


def test_fine_tuning_refuses_data_smaller_than_its_batch(cli, factories: Path, tmp_path: Path) -> None:
    result = cli("apply", recipe(tmp_path, factories, "model", "three", finetune=True), "-o", str(tmp_path / "out"))
    one_line_error(result, "finetune.batch_size 8 exceeds the 3 training examples")  # the recipe key, not --batch-size


def test_plan_refuses_max_samples_0(cli, factories: Path, tmp_path: Path) -> None:
    result = cli("plan", f"{factories}:model", "--data", f"{factories}:data", "--max-samples", "0",
                 "--budget", "avg_bits=4", "-o", str(tmp_path / "plan.yaml"))
    one_line_error(result, "--max-samples", "at least 1")
    assert not (tmp_path / "plan.yaml").exists()


def test_plan_refuses_outputs_that_are_not_differentiable(cli, factories: Path, tmp_path: Path) -> None:
    result = cli("plan", f"{factories}:detached", "--data", f"{factories}:data", "--budget", "avg_bits=4",
                 "-o", str(tmp_path / "plan.yaml"))
    one_line_error(result, "not differentiable")


@pytest.mark.parametrize("data", ["data", "unlabeled"])
def test_fine_tuning_refuses_outputs_that_are_not_differentiable(cli, factories: Path, tmp_path: Path,
                                                                 data: str) -> None:
    result = cli("apply", recipe(tmp_path, factories, "detached", data, finetune=True), "-o", str(tmp_path / "out"))
    one_line_error(result, "detached", "not differentiable", "fine-tuning")
    assert not (tmp_path / "out" / "compressed.json").exists()


def test_post_training_quantization_needs_no_gradient(cli, factories: Path, tmp_path: Path) -> None:
    result = cli("apply", recipe(tmp_path, factories, "detached", "data", finetune=False), "-o", str(tmp_path / "out"))
    assert result.code == 0, result.err


@pytest.mark.parametrize("verb", ["eval", "curvature", "apply"])
def test_integer_outputs_are_refused(cli, factories: Path, tmp_path: Path, verb: str) -> None:
    if verb == "apply":
        result = cli("apply", recipe(tmp_path, factories, "argmax", "unlabeled", finetune=False),
                     "-o", str(tmp_path / "out"))
    else:
        result = cli(verb, f"{factories}:argmax", "--data", f"{factories}:unlabeled",
                     *(["--reference", f"{factories}:model"] if verb == "eval" else ["--max-products", "4"]))
    one_line_error(result, "int64", "return the logits")


@pytest.mark.parametrize("verb", ["eval", "curvature"])
def test_unlabeled_data_needs_outputs_with_a_feature_axis(cli, factories: Path, verb: str) -> None:
    result = cli(verb, f"{factories}:scalar", "--data", f"{factories}:unlabeled",
                 *(["--reference", f"{factories}:scalar"] if verb == "eval" else ["--max-products", "4"]))
    one_line_error(result, "shape (24,)", "(batch, features)")
