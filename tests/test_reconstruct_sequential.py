"""The true-sequential driver: execution order and shared-input steps, sequential vs one-pass
statistics differing exactly where a layer's input comes from an already-compressed layer, and the
loss-aware row weights against a direct autograd computation."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compress.errors import ConfigError
from compress.reconstruct.layer import ReconstructSettings, reconstruct_layer
from compress.reconstruct.output import output_row_weights
from compress.reconstruct.sequential import execution_steps, reconstruct_model_
from compress.reconstruct.stats import collect_layer_stats


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(6, 6)
        self.k, self.q, self.v = nn.Linear(6, 6), nn.Linear(6, 6), nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.q(x), self.k(x), self.v(x)
        mixed = torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v
        return self.head(torch.relu(self.out(mixed)))


def _batches(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 5, 6, generator=generator) for _ in range(3)]


def test_steps_follow_execution_and_group_shared_inputs() -> None:
    model = Attention()
    steps = execution_steps(model, ["head", "out", "k", "q", "v"], _batches()[0])
    assert steps == [["q", "k", "v"], ["out"], ["head"]]


@pytest.mark.parametrize("sequential", [True, False])
def test_sequential_differs_only_after_the_first_compressed_layer(sequential: bool) -> None:
    torch.manual_seed(0)
    model, batches = Attention(), _batches()
    original = copy.deepcopy(model)
    # plain statistics (the input-drift correction, tested in test_reconstruct_drift.py, also pairs the float inputs)
    settings = {name: ReconstructSettings(bits=2, input_drift=False) for name in ("q", "k", "v", "out", "head")}
    results, report = reconstruct_model_(model, settings, batches, sequential=sequential)
    assert list(report.layers) == ["q", "k", "v", "out", "head"]
    # q/k/v read the model input: the same statistics either way
    first = collect_layer_stats(original, batches, ["q"])["q"]
    torch.testing.assert_close(results["q"].weight, reconstruct_layer(original.q.weight, first, settings["q"]).weight)
    # "out" reads q/k/v's outputs: from the compressed ones only when sequential
    source = copy.deepcopy(original)
    if sequential:
        for name in ("q", "k", "v"):
            source.get_submodule(name).weight.data.copy_(results[name].weight)
    stats = collect_layer_stats(source, batches, ["out"])["out"]
    torch.testing.assert_close(results["out"].weight, reconstruct_layer(original.out.weight, stats, settings["out"]).weight)
    other = collect_layer_stats(original if sequential else _compressed(original, results), batches, ["out"])["out"]
    assert not torch.allclose(reconstruct_layer(original.out.weight, other, settings["out"]).weight, results["out"].weight)
    torch.testing.assert_close(model.out.weight, results["out"].weight)


def _compressed(model: nn.Module, results: dict) -> nn.Module:
    model = copy.deepcopy(model)
    for name in ("q", "k", "v"):
        model.get_submodule(name).weight.data.copy_(results[name].weight)
    return model


def test_unsupported_layer_is_a_one_line_config_error() -> None:
    model = nn.Sequential(nn.Linear(6, 6), nn.LayerNorm(6))
    with pytest.raises(ConfigError, match="LayerNorm; second-order reconstruction handles Conv2d and Linear"):
        reconstruct_model_(model, {"1": ReconstructSettings(bits=4)}, [torch.randn(2, 6)])


def test_row_weights_are_the_mean_squared_output_gradients() -> None:
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 16, 4))
    inputs, targets = torch.randn(5, 2, 6, 6), torch.tensor([0, 1, 2, 3, 0])
    weights = output_row_weights(model, [((inputs,), targets)], ["0", "3"], "ce")
    hidden = model[0](inputs)
    hidden.retain_grad()
    logits = model[3](model[2](model[1](hidden)))
    nn.functional.cross_entropy(logits, targets, reduction="sum").backward()
    conv = hidden.grad.pow(2).sum(dim=(0, 2, 3))
    torch.testing.assert_close(weights["0"], (conv / conv.mean()).double(), rtol=1e-5, atol=1e-6)
    probs = torch.softmax(logits.detach(), dim=1)
    linear = (probs - nn.functional.one_hot(targets, 4)).pow(2).sum(dim=0)
    torch.testing.assert_close(weights["3"], (linear / linear.mean()).double(), rtol=1e-5, atol=1e-6)
