"""Drift-aware low-rank factors against exact references: on a random least-squares problem with
drifted inputs x̃ ≠ x, the predicted error of every rank equals the measured Σ‖W·x − Ŵ·x̃‖²/N and
the factors are the reduced-rank regression solution computed from the samples; with x̃ = x they
are plain whitened SVD; the true-sequential driver pairs the float model's inputs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compress.errors import ConfigError, InputError
from compress.lowrank.apply import apply_lowrank_
from compress.lowrank.drift import drift_svds
from compress.reconstruct.drift import drift_error
from compress.lowrank.factorize import truncated_factors, weighted_svd, whitening_factor
from compress.lowrank.settings import LowRankSettings
from compress.reconstruct.drift import DriftAccumulator
from compress.reconstruct.stats import collect_layer_stats
from tests.test_reconstruct_drift import _drifted, _linear_stats, _measured

RANKS = (1, 2, 4, 5)


def _row_weights(rows: int) -> torch.Tensor:
    return torch.linspace(0.2, 3.0, rows, dtype=torch.float64)


def _approximation(svd, rank: int) -> torch.Tensor:
    factors = truncated_factors(svd, rank)
    return factors.second @ factors.first


@pytest.mark.parametrize("weighted", [False, True])
def test_predicted_error_is_the_measured_drift_objective(weighted: bool) -> None:
    """Exact least squares (ridge 0), undamped: predicted D(Ŵ) = D(W*) + ½Σ_{i>r}σ_i² = measured."""
    weight, x, drifted = _drifted(seed=3, rows=6, columns=12)
    stats = _linear_stats(x, drifted)
    rows = _row_weights(6) if weighted else torch.ones(6, dtype=torch.float64)
    (svd,) = drift_svds(weight[None], stats, 0.0, rows if weighted else None, ridge=0.0)
    for rank in RANKS:
        approx = _approximation(svd, rank)
        measured = (rows * _measured(weight, approx, x, drifted)).sum()
        torch.testing.assert_close(svd.errors()[rank], measured, rtol=1e-8, atol=1e-10)
        if not weighted:
            torch.testing.assert_close(torch.tensor(drift_error(weight[None], approx[None], stats), dtype=torch.float64),
                                       measured, rtol=1e-8, atol=1e-10)


def test_factors_are_the_reduced_rank_regression_of_the_samples() -> None:
    """Reference (Izenman 1975): the rank-r minimiser of ‖W·X − Ŵ·X̃‖_F projects the least-squares
    fitted outputs Ŷ = W*·X̃ onto their top-r left singular vectors: Ŵ = U_r·U_rᵀ·W*."""
    weight, x, drifted = _drifted(seed=4, rows=7, columns=10)
    stats = _linear_stats(x, drifted)
    (svd,) = drift_svds(weight[None], stats, 0.0, ridge=0.0)
    least_squares = torch.linalg.lstsq(drifted, x @ weight.T).solution.T
    left = torch.linalg.svd(least_squares @ drifted.T, full_matrices=False).U
    for rank in RANKS:
        expected = left[:, :rank] @ left[:, :rank].T @ least_squares
        torch.testing.assert_close(_approximation(svd, rank), expected, rtol=1e-7, atol=1e-9)
    # no other rank-r weight does better (random rank-r perturbations of the solution)
    best = _measured(weight, _approximation(svd, 3), x, drifted).sum()
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        other = _approximation(svd, 3) + 0.05 * torch.randn(7, 3, generator=generator, dtype=torch.float64) @ torch.randn(
            3, 10, generator=generator, dtype=torch.float64)
        other = torch.linalg.svd(other).U[:, :3] @ torch.linalg.svd(other).U[:, :3].T @ other
        assert _measured(weight, other, x, drifted).sum() >= best


@pytest.mark.parametrize("damping", [0.0, 0.01])
def test_without_drift_it_is_plain_whitened_svd(damping: float) -> None:
    """x̃ = x: C = H̃ = H, so W* = W (whatever the ridge) and the floor is 0."""
    weight, x, _ = _drifted(seed=5, rows=6, columns=12)
    stats = _linear_stats(x, x)
    rows = _row_weights(6)
    (drift,) = drift_svds(weight[None], stats, damping, rows)
    plain = weighted_svd(weight, whitening_factor(stats.hessian[0], damping), rows)
    assert drift.floor == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(drift.errors(), plain.errors(), rtol=1e-9, atol=1e-12)
    for rank in RANKS:
        torch.testing.assert_close(_approximation(drift, rank), _approximation(plain, rank), rtol=1e-9, atol=1e-12)


class _Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.first, self.second = nn.Linear(12, 10, dtype=torch.float64), nn.Linear(10, 8, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.tanh(self.first(x)))


def _batches() -> list[tuple[torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(64, 12, generator=generator, dtype=torch.float64),) for _ in range(3)]


def test_driver_factorises_true_sequentially_toward_the_float_outputs() -> None:
    model, batches = _Chain().eval(), _batches()
    original = copy.deepcopy(model)
    settings = {n: LowRankSettings(rank=3, method="whitened", input_drift=True) for n in ("first", "second")}
    records = apply_lowrank_(model, settings, batches=batches).layers
    # the first layer reads the model input: no drift, plain whitened SVD
    plain = copy.deepcopy(original)
    stats = collect_layer_stats(plain, batches, ["first"])
    apply_lowrank_(plain, {"first": LowRankSettings(rank=3, method="whitened")}, stats)
    torch.testing.assert_close(model.first[0].weight, plain.first[0].weight)
    torch.testing.assert_close(model.first[1].weight, plain.first[1].weight)
    # the second: the factorised first layer's outputs paired with the float model's
    accumulator = DriftAccumulator(original.second)
    with torch.no_grad():
        for (batch,) in batches:
            accumulator.add_pair(torch.tanh(model.first(batch)), torch.tanh(original.first(batch)))
    (svd,) = drift_svds(original.second.weight.detach()[None], accumulator.result(), 0.01)
    torch.testing.assert_close(model.second[1].weight @ model.second[0].weight, _approximation(svd, 3))
    # its record: the measured error against the float model's layer output
    with torch.no_grad():
        inputs = torch.cat([b for (b,) in batches])
        measured = (original.second(torch.tanh(original.first(inputs))) - model(inputs)).pow(2).sum(dim=1).mean()
    assert records["second"].output_error == pytest.approx(float(measured), rel=1e-9)
    assert records["second"].settings.input_drift


def test_a_failure_leaves_the_model_untouched_and_settings_are_checked() -> None:
    model = _Chain().eval()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(InputError, match="input_drift needs the calibration data"):
        apply_lowrank_(model, {"second": LowRankSettings(rank=3, input_drift=True)})
    with pytest.raises(ConfigError, match="input_drift is not allowed with method svd"):
        LowRankSettings(rank=3, method="svd", input_drift=True)
    with pytest.raises(ConfigError, match="rank 9"):
        apply_lowrank_(model, {"first": LowRankSettings(rank=3, input_drift=True),
                               "second": LowRankSettings(rank=9, input_drift=True)}, batches=_batches())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_fixed_ridge_reaches_the_target_and_is_validated() -> None:
    """The first layer factorised from the float statistics (no drift), the second with drift and a
    fixed ridge on the inputs the factorised first layer produces."""
    model, batches = _Chain().eval(), _batches()
    original = copy.deepcopy(model)
    settings = LowRankSettings(rank=3, method="fisher_whitened", input_drift=True, drift_ridge=10.0)
    fisher = {"second": torch.linspace(0.5, 2.0, 8, dtype=torch.float64)}
    stats = collect_layer_stats(original, batches, ["first"])
    apply_lowrank_(model, {"first": LowRankSettings(rank=2), "second": settings}, stats, fisher, batches)
    accumulator = DriftAccumulator(original.second)
    with torch.no_grad():
        for (batch,) in batches:
            accumulator.add_pair(torch.tanh(model.first(batch)), torch.tanh(original.first(batch)))
    rows = fisher["second"] + 0.01 * fisher["second"].mean()
    (svd,) = drift_svds(original.second.weight.detach()[None], accumulator.result(), 0.01, rows, ridge=10.0)
    torch.testing.assert_close(model.second[1].weight @ model.second[0].weight, _approximation(svd, 3))
    for bad, message in ((-1.0, "drift_ridge -1.0 is not allowed"), (True, "drift_ridge True is not allowed")):
        with pytest.raises(ConfigError, match=message):
            LowRankSettings(rank=3, input_drift=True, drift_ridge=bad)
    with pytest.raises(ConfigError, match="drift_ridge is not allowed without input_drift"):
        LowRankSettings(rank=3, drift_ridge=1.0)


def test_apply_pipeline_factorises_with_input_drift() -> None:
    """``apply_`` (the recipe's path) hands the calibration batches to the drift pass."""
    from compress.apply.pipeline import ApplySpec, apply_
    from compress.data.source import TensorData

    batches = _batches()
    data = TensorData("x", (torch.cat([b for (b,) in batches]),), None)
    settings = {"first": LowRankSettings(rank=3), "second": LowRankSettings(rank=3, input_drift=True)}
    model = _Chain().eval()
    expected = copy.deepcopy(model)
    outcome = apply_(model, ApplySpec(lowrank=settings), data, None, batch_size=64)
    stats = collect_layer_stats(expected, batches, ["first"])
    apply_lowrank_(expected, settings, stats, None, batches)
    for name in ("first.0", "first.1", "second.0", "second.1"):
        torch.testing.assert_close(model.get_submodule(name).weight, expected.get_submodule(name).weight)
    assert outcome.lowrank.layers["second"].settings.input_drift
