"""The low-rank verb on whole models: records, reloading, the output Fisher, later quantization."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from compress.errors import InputError
from compress.lowrank.apply import apply_lowrank_, restore_structure_
from compress.lowrank.fisher import output_fisher_diag
from compress.lowrank.records import LowRankRecords
from compress.lowrank.settings import LowRankSettings
from compress.quant.quantize import quantize_model_
from compress.quant.records import QuantSettings
from compress.reconstruct.stats import collect_layer_stats


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


def images(count: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 3, 6, 6, generator=torch.Generator().manual_seed(seed))


def factorised_convnet() -> tuple[nn.Module, LowRankRecords]:
    model = ConvNet().eval()
    batches = [(images(),)]
    names = ["conv", "head"]
    stats = collect_layer_stats(model, batches, names)
    fisher = output_fisher_diag(model, batches, names)
    settings = {"conv": LowRankSettings(rank=4, method="whitened"),
                "head": LowRankSettings(rank_ratio=0.5, method="fisher_whitened")}
    return model, apply_lowrank_(model, settings, stats, fisher)


def test_records_round_trip_and_reload_into_a_fresh_model() -> None:
    model, records = factorised_convnet()
    again = LowRankRecords.from_dict(json.loads(json.dumps(records.to_dict())))
    assert again == records
    fresh = restore_structure_(ConvNet().eval(), again)
    fresh.load_state_dict(model.state_dict())
    x = images(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
    assert records.layers["head"].rank == int(0.5 * 10 * 288 / 298)
    assert records.layers["conv"].metric == "output" and records.layers["head"].metric == "fisher_output"


def test_factorised_layers_are_quantized_like_any_layer() -> None:
    model, _ = factorised_convnet()
    settings = {name: QuantSettings(weight_bits=8, act_bits=None) for name in ("conv.0", "conv.1", "head.0", "head.1")}
    reference = copy.deepcopy(model)
    quantize_model_(model, settings, [images(seed=2)])
    x = images(seed=3)
    with torch.no_grad():
        cosine = nn.functional.cosine_similarity(model(x), reference(x)).min()
    assert cosine > 0.99, float(cosine)


def test_output_fisher_is_the_gauss_newton_diagonal() -> None:
    """For y = A·x followed by f = B·tanh(y)… kept linear here: f = B·y, so J = B and E[g²] = diag(BᵀB)."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(5, 6), nn.Linear(6, 3))
    batches = [(torch.randn(2000, 5),) for _ in range(10)]
    fisher = output_fisher_diag(model, batches, ["0", "1"])
    expected = (model[1].weight.detach().double() ** 2).sum(dim=0)
    torch.testing.assert_close(fisher["0"], expected, rtol=0.05, atol=0)
    torch.testing.assert_close(fisher["1"], torch.ones(3, dtype=torch.float64), rtol=0.05, atol=0)


def test_conv_output_fisher_counts_every_output_position() -> None:
    """A 1×1 conv followed by a sum over positions: g at each position is Bᵀ·v, the same for all."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(2, 4, 1), nn.Conv2d(4, 3, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    fisher = output_fisher_diag(model, [(torch.randn(4000, 2, 2, 2),)], ["0"])
    expected = (model[1].weight.detach().double().reshape(3, 4) ** 2).sum(dim=0) / 16  # mean over 4 positions
    torch.testing.assert_close(fisher["0"], expected, rtol=0.05, atol=0)


def test_methods_refuse_missing_statistics() -> None:
    model = ConvNet()
    with pytest.raises(InputError, match="conv: method whitened needs the layer's input statistics"):
        apply_lowrank_(model, {"conv": LowRankSettings(rank=2, method="whitened")})
    with pytest.raises(InputError, match="head: method fisher needs the layer's output Fisher diagonal"):
        apply_lowrank_(model, {"head": LowRankSettings(rank=2, method="fisher")}, output_fisher={"head": torch.ones(9)})
    with pytest.raises(InputError, match="head: method fisher needs the layer's output Fisher diagonal"):
        apply_lowrank_(model, {"head": LowRankSettings(rank=2, method="fisher")},
                       output_fisher={"head": -torch.ones(10)})
    assert isinstance(model.conv, nn.Conv2d) and isinstance(model.head, nn.Linear)


def test_a_layer_no_gradient_reaches_is_weighted_uniformly() -> None:
    """An all-zero output Fisher (the loss never sees the layer): fisher_whitened = whitened."""
    model = ConvNet().eval()
    stats = collect_layer_stats(model, [(images(),)], ["conv"])
    weighted, plain = copy.deepcopy(model), copy.deepcopy(model)
    apply_lowrank_(weighted, {"conv": LowRankSettings(rank=3, method="fisher_whitened")}, stats,
                   {"conv": torch.zeros(8)})
    apply_lowrank_(plain, {"conv": LowRankSettings(rank=3, method="whitened")}, stats)
    product = [m.conv[1].weight.flatten(1) @ m.conv[0].weight.flatten(1) for m in (weighted, plain)]
    torch.testing.assert_close(product[0], product[1], rtol=1e-5, atol=1e-6)
