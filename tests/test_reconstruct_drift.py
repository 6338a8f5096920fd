"""Input-drift correction against exact references: the identity D(ŵ) = ½(ŵ − w*)(H̃ + λI)(ŵ − w*)ᵀ +
D(w*) in float64; GPTQ on the drift target equal to a plain OBQ on w* (solved here directly); no
drift (x = x̃) equal to plain GPTQ; the predicted error equal to the measured drift objective for a
Linear and a grouped Conv2d (outputs by ``F.conv2d``); the driver pairing the float model's inputs."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compress.reconstruct.cholesky import fix_dead_inputs
from compress.reconstruct.drift import RIDGE_GRID, DriftAccumulator, drift_objective, drift_target
from compress.reconstruct.gptq import column_scales, grid_scales
from compress.reconstruct.layer import ReconstructSettings, reconstruct_layer
from compress.reconstruct.sequential import reconstruct_model_
from compress.reconstruct.stats import LayerStats, collect_layer_stats
from tests.helpers.least_squares import problem
from tests.test_reconstruct_gptq import reference_obq


def _drifted(seed: int = 0, rows: int = 6, columns: int = 20) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A weight, float inputs x [N, K] and drifted inputs x̃ = x·(I + E) + noise."""
    weight, x = problem(rows=rows, columns=columns, seed=seed)
    generator = torch.Generator().manual_seed(seed + 100)
    mixing = 0.1 * torch.randn(columns, columns, generator=generator, dtype=torch.float64)
    drifted = x @ (torch.eye(columns, dtype=torch.float64) + mixing) + 0.1 * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    return weight, x, drifted


def _linear_stats(x: torch.Tensor, drifted: torch.Tensor) -> LayerStats:
    accumulator = DriftAccumulator(nn.Linear(x.shape[1], 1))
    accumulator.add_pair(drifted, x)
    return accumulator.result()


def _measured(weight: torch.Tensor, fixed: torch.Tensor, x: torch.Tensor, drifted: torch.Tensor) -> torch.Tensor:
    """Each row's Σ (w·x − ŵ·x̃)²/N, computed from the samples."""
    return (x @ weight.T - drifted @ fixed.T).pow(2).sum(dim=0) / len(x)


def _ridge_target(weight: torch.Tensor, x: torch.Tensor, drifted: torch.Tensor, relative: float) -> torch.Tensor:
    """w* = w + (X̃ᵀX̃ + λ'I)⁻¹·X̃ᵀ(X − X̃)wᵀ solved from the samples, λ' = relative·mean(diag X̃ᵀX̃)."""
    gram = drifted.T @ drifted
    ridge = relative * float(torch.diagonal(gram).mean())
    return weight + torch.linalg.solve(gram + ridge * torch.eye(gram.shape[0], dtype=gram.dtype), drifted.T @ (x - drifted) @ weight.T).T


def _target(weight: torch.Tensor, stats: LayerStats, ridge: float | None = None):
    hessians = stats.hessian.clone()
    dead = torch.stack([fix_dead_inputs(hessians[0])])
    return drift_target(weight, hessians, dead, stats, ridge)


def test_statistics_are_the_sample_products() -> None:
    _, x, drifted = _drifted()
    stats = _linear_stats(x, drifted)
    torch.testing.assert_close(stats.hessian[0], 2 * drifted.T @ drifted / len(x))
    torch.testing.assert_close(stats.cross[0], 2 * drifted.T @ x / len(x))
    torch.testing.assert_close(stats.reference_hessian[0], 2 * x.T @ x / len(x))


def test_drift_objective_identity() -> None:
    """Undamped: D(ŵ) = ½(ŵ − w*)H̃(ŵ − w*)ᵀ + D(w*) with w* the least-squares target."""
    weight, x, drifted = _drifted(seed=1)
    stats = _linear_stats(x, drifted)
    target = _target(weight, stats, ridge=0.0)
    expected = torch.linalg.lstsq(drifted, x @ weight.T).solution.T
    torch.testing.assert_close(target.rows, expected, rtol=1e-9, atol=1e-9)
    minimum = _measured(weight, target.rows, x, drifted)
    torch.testing.assert_close(drift_objective(weight, target.rows, stats, 0), minimum, rtol=1e-9, atol=1e-9)
    for seed in range(3):
        candidate = weight + torch.randn(weight.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        delta = candidate - target.rows
        predicted = 0.5 * ((delta @ stats.hessian[0]) * delta).sum(dim=1) + minimum
        torch.testing.assert_close(predicted, _measured(weight, candidate, x, drifted), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(drift_objective(weight, candidate, stats, 0), predicted, rtol=1e-9, atol=1e-9)


def test_ridge_is_the_generalised_cross_validation_minimum() -> None:
    """GCV(λ) = RSS(λ)/(1 − tr S_λ/N)² with the hat matrix S_λ = X̃(X̃ᵀX̃ + λ'I)⁻¹X̃ᵀ built from the
    samples, minimised over the same grid, against the choice made from the statistics."""
    weight, x, drifted = _drifted(seed=7, columns=40)
    x, drifted = x[:120], drifted[:120]  # few samples per input: the fit over-fits without a ridge
    stats = _linear_stats(x, drifted)
    scores = []
    for relative in RIDGE_GRID:
        gram = drifted.T @ drifted
        hat = drifted @ torch.linalg.solve(gram + relative * float(torch.diagonal(gram).mean()) * torch.eye(40, dtype=torch.float64), drifted.T)
        residual = _measured(weight, _ridge_target(weight, x, drifted, relative), x, drifted).sum()
        scores.append(float(residual / (1 - torch.trace(hat) / len(x)) ** 2))
    best = RIDGE_GRID[scores.index(min(scores))]
    assert RIDGE_GRID[0] < best < RIDGE_GRID[-1]
    target = _target(weight, stats)
    assert target.ridges == [best]
    torch.testing.assert_close(target.rows, _ridge_target(weight, x, drifted, best), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("damp", [0.0, 0.01])
@pytest.mark.parametrize("weight_block", [None, 4])
def test_gptq_on_the_drift_target_equals_reference_obq(damp: float, weight_block: int | None) -> None:
    weight, x, drifted = _drifted(seed=2)
    stats = _linear_stats(x, drifted)
    settings = ReconstructSettings(bits=3, weight_block=weight_block, damp=damp, block_size=1, act_order=False,
                                   refit_scales=False, input_drift=True)
    result = reconstruct_layer(weight, stats, settings)
    target = _ridge_target(weight, x, drifted, result.drift_ridge)
    hessian = 2 * drifted.T @ drifted / len(x)
    damped = hessian + damp * torch.diagonal(hessian).mean() * torch.eye(20, dtype=torch.float64)
    scales = column_scales(grid_scales(target, 3, weight_block, torch.diagonal(hessian)), 20)
    expected = reference_obq(target, damped, scales, 3)
    torch.testing.assert_close(result.weight, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(result.row_error, _measured(weight, result.weight, x, drifted), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("settings", [ReconstructSettings(bits=4, weight_block=4), ReconstructSettings(bits=3),
                                      ReconstructSettings(ratio=0.5), ReconstructSettings(bits=4, ratio=0.5)])
def test_without_drift_it_is_plain_gptq(settings: ReconstructSettings) -> None:
    weight, x, _ = _drifted(seed=3)
    stats = _linear_stats(x, x)
    plain = reconstruct_layer(weight, LayerStats(stats.hessian, stats.mean, stats.count), settings)
    corrected = reconstruct_layer(weight, stats, replace(settings, input_drift=True))
    torch.testing.assert_close(corrected.weight, plain.weight, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(corrected.row_error, _measured(weight, plain.weight, x, x), rtol=1e-9, atol=1e-9)


def test_drift_lowers_the_drift_objective() -> None:
    weight, x, drifted = _drifted(seed=4, rows=8, columns=32)
    stats = _linear_stats(x, drifted)
    plain = reconstruct_layer(weight, LayerStats(stats.hessian, stats.mean, stats.count), ReconstructSettings(bits=3, weight_block=8))
    corrected = reconstruct_layer(weight, stats, ReconstructSettings(bits=3, weight_block=8, input_drift=True))
    measured = _measured(weight, corrected.weight, x, drifted)
    torch.testing.assert_close(corrected.row_error, measured, rtol=1e-9, atol=1e-9)
    assert measured.sum() < 0.8 * _measured(weight, plain.weight, x, drifted).sum()


def test_grouped_conv_predicted_error_is_the_conv_output_error() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2).double()
    x = torch.randn(5, 4, 7, 7, dtype=torch.float64)
    drifted = x + 0.2 * torch.randn_like(x)
    accumulator = DriftAccumulator(conv)
    accumulator.add_pair(drifted, x)
    stats = accumulator.result()
    result = reconstruct_layer(conv.weight, stats, ReconstructSettings(bits=3, damp=0.0, input_drift=True))
    float_output = F.conv2d(x, conv.weight, padding=1, groups=2)
    fixed_output = F.conv2d(drifted, result.weight, padding=1, groups=2)
    measured = (float_output - fixed_output).pow(2).sum(dim=(0, 2, 3)) / stats.count
    torch.testing.assert_close(result.row_error, measured, rtol=1e-9, atol=1e-9)


class _Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.tanh(self.first(x)))


def test_driver_pairs_the_float_models_inputs() -> None:
    torch.manual_seed(0)
    model = _Chain()
    original = copy.deepcopy(model)
    batches = [torch.randn(4, 5, 6) for _ in range(3)]
    settings = {n: ReconstructSettings(bits=2, input_drift=True) for n in ("first", "second")}
    results, _ = reconstruct_model_(model, settings, batches)
    # the first layer reads the model input: no drift, plain GPTQ
    first = collect_layer_stats(original, batches, ["first"])["first"]
    plain = reconstruct_layer(original.first.weight, first, replace(settings["first"], input_drift=False))
    torch.testing.assert_close(results["first"].weight, plain.weight, rtol=1e-6, atol=1e-6)
    # the second: compressed inputs paired with the float model's, sample by sample
    compressed = copy.deepcopy(original)
    compressed.first.weight.data.copy_(results["first"].weight)
    accumulator = DriftAccumulator(original.second)
    with torch.no_grad():
        for batch in batches:
            accumulator.add_pair(torch.tanh(compressed.first(batch)), torch.tanh(original.first(batch)))
    expected = reconstruct_layer(original.second.weight, accumulator.result(), settings["second"])
    torch.testing.assert_close(results["second"].weight, expected.weight)
    torch.testing.assert_close(results["second"].row_error, expected.row_error)



@pytest.mark.parametrize("input_drift", [True, False])
def test_recipe_key_reaches_the_layer_settings(input_drift: bool) -> None:
    from compress.quant.records import QuantSettings
    from compress.reconstruct.settings import reconstruct_settings

    settings = reconstruct_settings({"head": QuantSettings(weight_bits=4, act_bits=None, input_drift=input_drift)}, {})
    assert settings["head"].input_drift is input_drift
