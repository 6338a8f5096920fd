"""Low-rank factorisation numerics, checked against measured layer outputs in float64."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compress.errors import ConfigError
from compress.lowrank.apply import apply_lowrank_, predicted_errors
from compress.lowrank.records import LowRankRecord
from compress.lowrank.settings import LowRankSettings
from compress.reconstruct.stats import collect_layer_stats

DT = torch.float64


def correlated_inputs(count: int, dim: int, seed: int) -> torch.Tensor:
    """Inputs with a strongly anisotropic covariance and a mean (as real activations have)."""
    gen = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=gen, dtype=DT) * torch.logspace(0, -2, dim, dtype=DT)[:, None]
    return torch.randn(count, dim, generator=gen, dtype=DT) @ mixing + 0.3 * torch.randn(dim, generator=gen, dtype=DT)


def random_linear(m: int, n: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(n, m, dtype=DT).eval()


def factorised(layer: nn.Module, inputs: torch.Tensor, output_fisher: torch.Tensor | None = None,
               **settings) -> tuple[nn.Module, LowRankRecord]:
    """A factorised copy of ``layer`` (statistics from ``inputs``) and its record."""
    model = nn.Sequential(copy.deepcopy(layer))
    stats = collect_layer_stats(model, [(inputs,)], ["0"])
    fisher = None if output_fisher is None else {"0": output_fisher}
    records = apply_lowrank_(model, {"0": LowRankSettings(**settings)}, stats, fisher)
    return model[0], records.layers["0"]


def output_rows(output: torch.Tensor) -> torch.Tensor:
    """Outputs as rows of features: tokens of a Linear, output positions of a Conv2d."""
    return output.movedim(1, -1).reshape(-1, output.shape[1]) if output.ndim == 4 else output


def output_error(original: nn.Module, approx: nn.Module, inputs: torch.Tensor,
                 row_weights: torch.Tensor | None = None) -> float:
    """(1/N)·Σ_t Σ_i d_i·(y_t − ŷ_t)_i² over output rows t, d = 1 unless given."""
    with torch.no_grad():
        rows = output_rows(original(inputs) - approx(inputs))
    weights = torch.ones(rows.shape[1], dtype=DT) if row_weights is None else row_weights
    return float((rows.pow(2) * weights).sum(dim=1).mean())


def weight_error(original: nn.Linear, approx: nn.Sequential, row_weights: torch.Tensor) -> float:
    """Σ_i d_i·‖W_i − (W_r)_i‖² with W_r = second·first."""
    with torch.no_grad():
        delta = original.weight - approx[1].weight @ approx[0].weight
    return float((delta.pow(2).sum(dim=1) * row_weights).sum())


@pytest.mark.parametrize("m,n,rank", [(24, 40, 5), (40, 24, 11), (32, 32, 1), (16, 48, 11)])
def test_whitened_predicted_error_is_the_measured_output_error(m: int, n: int, rank: int) -> None:
    layer, inputs = random_linear(m, n, seed=m + n), correlated_inputs(700, n, seed=rank)
    approx, record = factorised(layer, inputs, rank=rank, method="whitened", damping=0.0)
    measured = output_error(layer, approx, inputs)
    assert record.predicted_error == pytest.approx(measured, rel=1e-8), (record.predicted_error, measured)
    assert record.output_error == pytest.approx(measured, rel=1e-8)
    assert record.metric == "output"


def test_damping_adds_exactly_its_term_to_the_prediction() -> None:
    layer, inputs = random_linear(20, 30, seed=1), correlated_inputs(400, 30, seed=2)
    approx, record = factorised(layer, inputs, rank=6, method="whitened", damping=0.05)
    hessian = 2 * inputs.T @ inputs / len(inputs)
    with torch.no_grad():
        delta = layer.weight - approx[1].weight @ approx[0].weight
    expected = output_error(layer, approx, inputs) + 0.5 * 0.05 * float(hessian.diagonal().mean()) * float(delta.pow(2).sum())
    assert record.predicted_error == pytest.approx(expected, rel=1e-8)


def test_whitened_beats_plain_svd_on_output_error_and_svd_is_frobenius_optimal() -> None:
    layer, inputs = random_linear(24, 40, seed=3), correlated_inputs(700, 40, seed=4)
    whitened, _ = factorised(layer, inputs, rank=8, method="whitened", damping=0.0)
    plain, plain_record = factorised(layer, inputs, rank=8, method="svd")
    assert output_error(layer, whitened, inputs) < 0.9 * output_error(layer, plain, inputs)
    singular = torch.linalg.svdvals(layer.weight.detach())
    assert plain_record.predicted_error == pytest.approx(float((singular[8:] ** 2).sum()), rel=1e-10)
    assert plain_record.predicted_error == pytest.approx(weight_error(layer, plain, torch.ones(24, dtype=DT)), rel=1e-8)


def test_fisher_predictions_are_the_weighted_errors() -> None:
    layer, inputs = random_linear(24, 40, seed=5), correlated_inputs(700, 40, seed=6)
    fisher = torch.rand(24, generator=torch.Generator().manual_seed(7), dtype=DT) ** 4
    rows, record = factorised(layer, inputs, fisher, rank=7, method="fisher", damping=0.0)
    plain, _ = factorised(layer, inputs, rank=7, method="svd")
    assert record.predicted_error == pytest.approx(weight_error(layer, rows, fisher), rel=1e-8)
    assert weight_error(layer, rows, fisher) < weight_error(layer, plain, fisher)
    both, record = factorised(layer, inputs, fisher, rank=7, method="fisher_whitened", damping=0.0)
    whitened, _ = factorised(layer, inputs, rank=7, method="whitened", damping=0.0)
    assert record.predicted_error == pytest.approx(output_error(layer, both, inputs, fisher), rel=1e-8)
    assert output_error(layer, both, inputs, fisher) < output_error(layer, whitened, inputs, fisher)


@pytest.mark.parametrize("method", ["svd", "whitened", "fisher", "fisher_whitened"])
def test_an_exactly_rank_r_layer_is_factorised_losslessly(method: str) -> None:
    layer, inputs = random_linear(30, 50, seed=8), correlated_inputs(300, 50, seed=9)
    gen = torch.Generator().manual_seed(10)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(30, 4, generator=gen, dtype=DT) @ torch.randn(4, 50, generator=gen, dtype=DT))
    fisher = torch.rand(30, generator=gen, dtype=DT)
    approx, record = factorised(layer, inputs, fisher, rank=4, method=method)
    with torch.no_grad():
        torch.testing.assert_close(approx(inputs), layer(inputs), rtol=1e-10, atol=1e-10)
    assert record.predicted_error < 1e-18 and record.output_error < 1e-18


def rank_deficient_conv(groups: int, rank: int, seed: int) -> nn.Conv2d:
    torch.manual_seed(seed)
    conv = nn.Conv2d(6, 8, 3, stride=2, padding=1, dilation=1, groups=groups, dtype=DT)
    m, n = 8 // groups, conv.weight[0].numel()
    with torch.no_grad():
        low = torch.randn(groups, m, rank, dtype=DT) @ torch.randn(groups, rank, n, dtype=DT)
        conv.weight.copy_(low.reshape(conv.weight.shape))
    return conv.eval()


@pytest.mark.parametrize("groups,method", [(1, "svd"), (1, "whitened"), (2, "svd"), (2, "whitened")])
def test_conv_factorisation_equals_the_original_on_rank_deficient_kernels(groups: int, method: str) -> None:
    conv = rank_deficient_conv(groups, rank=2, seed=groups)
    images = torch.randn(5, 6, 9, 11, generator=torch.Generator().manual_seed(11), dtype=DT)
    approx, record = factorised(conv, images, rank=2, method=method)
    assert [type(layer) for layer in approx] == [nn.Conv2d, nn.Conv2d]
    assert approx[0].kernel_size == (3, 3) and approx[1].kernel_size == (1, 1) and approx[1].groups == groups
    with torch.no_grad():
        torch.testing.assert_close(approx(images), conv(images), rtol=1e-10, atol=1e-10)
    assert sum(p.numel() for p in approx.parameters()) == record.params_after < record.params_before


@pytest.mark.parametrize("groups", [1, 2])
def test_whitened_conv_prediction_is_the_measured_output_error(groups: int) -> None:
    torch.manual_seed(12)
    conv = nn.Conv2d(6, 8, 3, stride=2, padding=1, groups=groups, dtype=DT).eval()
    images = torch.randn(6, 6, 10, 10, dtype=DT).cumsum(dim=3)  # correlated neighbouring pixels
    approx, record = factorised(conv, images, rank=1, method="whitened", damping=0.0)
    assert record.predicted_error == pytest.approx(output_error(conv, approx, images), rel=1e-8)


@pytest.mark.parametrize("method", ["svd", "whitened", "fisher_whitened"])
def test_error_curve_gives_every_rank_prediction_from_one_svd(method: str) -> None:
    layer, inputs = random_linear(12, 20, seed=13), correlated_inputs(200, 20, seed=14)
    fisher = torch.rand(12, generator=torch.Generator().manual_seed(15), dtype=DT)
    stats = collect_layer_stats(nn.Sequential(layer), [(inputs,)], ["0"])["0"]
    curve = predicted_errors(layer, method, stats, fisher)
    assert len(curve) == 13 and curve[-1] == 0.0 and curve == sorted(curve, reverse=True)
    for rank in (1, 4, 7):
        _, record = factorised(layer, inputs, fisher, rank=rank, method=method)
        assert curve[rank] == pytest.approx(record.predicted_error, rel=1e-10)


def test_singular_statistics_without_damping_are_refused_and_change_nothing() -> None:
    model = nn.Sequential(nn.Linear(10, 8, dtype=DT), nn.Linear(8, 8, dtype=DT))
    inputs = torch.randn(5, 10, dtype=DT)  # 5 samples: H of the first layer has rank ≤ 5
    stats = collect_layer_stats(model, [(inputs,)], ["0", "1"])
    settings = {"1": LowRankSettings(rank=2, method="svd"), "0": LowRankSettings(rank=2, method="whitened", damping=0.0)}
    with pytest.raises(ConfigError, match=r"0: its input statistics H are singular .* with damping 0.0; raise damping"):
        apply_lowrank_(model, settings, stats)
    assert all(isinstance(layer, nn.Linear) for layer in model)
