"""The least-squares scale re-fit after GPTQ (``rescale.refit_scales``) against a brute-force
weighted least-squares solve, and its effect in ``reconstruct_layer``: same codes, never a larger
objective, predicted error still the measured one."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from compress.reconstruct.gptq import column_scales
from compress.reconstruct.layer import ReconstructSettings, reconstruct_layer
from compress.reconstruct.rescale import refit_scales
from tests.helpers.least_squares import output_error, problem, stats_of


def _reference(rows: torch.Tensor, codes: torch.Tensor, blocks: int, hessian: torch.Tensor) -> torch.Tensor:
    """Per row: min_s ‖Lᵀ(D·s − w)‖ with H = L·Lᵀ and D[:, j] the codes of block j (zero elsewhere)."""
    width = rows.shape[1] // blocks
    lower = torch.linalg.cholesky(hessian)
    result = []
    for w, q in zip(rows, codes):
        design = torch.zeros(rows.shape[1], blocks, dtype=rows.dtype)
        for j in range(blocks):
            design[j * width : (j + 1) * width, j] = q[j * width : (j + 1) * width]
        result.append(torch.linalg.lstsq(lower.T @ design, lower.T @ w).solution)
    return torch.stack(result)


@pytest.mark.parametrize("blocks", [1, 4])
def test_refit_equals_weighted_least_squares(blocks: int) -> None:
    weight, x = problem(rows=5, columns=16, seed=7)
    hessian = stats_of(x).hessian[0]
    scales = torch.full((5, blocks), 0.4, dtype=torch.float64)
    codes = torch.clamp(torch.round(weight / 0.4), -3, 3)
    codes[codes == 0] = 1  # every block used
    fitted = refit_scales(weight, codes, scales, hessian)
    reference = _reference(weight, codes, blocks, hessian)
    assert (reference > 0).all()
    torch.testing.assert_close(fitted, reference, rtol=1e-8, atol=1e-10)


def test_refit_keeps_unused_blocks_and_rows_without_a_positive_optimum() -> None:
    hessian = torch.eye(4, dtype=torch.float64)
    rows = torch.tensor([[1.0, 1.0, 5.0, 5.0], [1.0, 1.0, 2.0, 2.0]], dtype=torch.float64)
    codes = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, -1.0, -1.0]], dtype=torch.float64)
    scales = torch.tensor([[0.5, 0.7], [0.5, 0.7]], dtype=torch.float64)
    fitted = refit_scales(rows, codes, scales, hessian)
    torch.testing.assert_close(fitted[0], torch.tensor([1.0, 0.7], dtype=torch.float64))  # block 1 unused
    torch.testing.assert_close(fitted[1], scales[1])  # optimum −2 for block 1: the row keeps its scales


@pytest.mark.parametrize("weight_block,symmetric", [(None, True), (4, True), (4, False)])
def test_layer_refit_keeps_codes_and_lowers_the_error(weight_block: int | None, symmetric: bool) -> None:
    weight, x = problem(columns=16, seed=3)
    stats = stats_of(x)
    settings = ReconstructSettings(bits=3, weight_block=weight_block, damp=0.0, refit_scales=False, symmetric=symmetric)
    plain = reconstruct_layer(weight, stats, settings)
    refit = reconstruct_layer(weight, stats, replace(settings, refit_scales=True))
    assert torch.equal(refit.codes(3), plain.codes(3))
    assert refit.zero_points is None if symmetric else torch.equal(refit.zero_points, plain.zero_points)
    assert not torch.equal(refit.scales, plain.scales)
    assert (refit.row_error <= plain.row_error * (1 + 1e-12)).all()
    assert refit.predicted_error < plain.predicted_error
    assert refit.predicted_error == pytest.approx(output_error(refit.weight - weight, x), rel=1e-6)


@pytest.mark.parametrize("weight_block,symmetric", [(None, True), (4, True), (4, False)])
def test_second_sweep_never_raises_a_row_error_and_stays_on_its_grid(weight_block: int | None, symmetric: bool) -> None:
    """The second pass (sweep on the re-fitted scales, re-fitted again) is kept per row only where
    it is better: every row's objective is at most the one-pass one, lower on some rows of these
    problems, and the result is still codes × scales with an exact predicted error."""
    lowered = 0
    for seed in range(4):
        weight, x = problem(columns=16, seed=seed)
        settings = ReconstructSettings(bits=3, weight_block=weight_block, damp=0.0, symmetric=symmetric)
        once = reconstruct_layer(weight, stats_of(x), settings)
        twice = reconstruct_layer(weight, stats_of(x), replace(settings, second_sweep=True))
        assert (twice.row_error <= once.row_error).all()
        lowered += int((twice.row_error < once.row_error).sum())
        scales = column_scales(twice.scales, 16)
        zeros = 0 if symmetric else column_scales(twice.zero_points, 16)
        torch.testing.assert_close((twice.codes(3) - zeros) * scales, twice.weight, rtol=0, atol=1e-12)
        assert twice.predicted_error == pytest.approx(output_error(twice.weight - weight, x), rel=1e-6)
    assert lowered > 0
