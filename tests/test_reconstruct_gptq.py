"""GPTQ against exact references: a plain OBQ written here (one weight at a time, exact OBS update
and inverse down-date) on random least-squares problems; the predicted error against the measured
‖ΔW·Xᵀ‖²/N; static act-order groups; dead inputs; singular Hessians raising the damping."""

from __future__ import annotations

import pytest
import torch

from compress.errors import ConfigError
from compress.quant.weights import weight_code_range
from compress.reconstruct.gptq import asymmetric_grid, column_scales, grid_scales
from compress.reconstruct.layer import ReconstructSettings, reconstruct_layer
from tests.helpers.least_squares import output_error as _output_error, problem as _problem, stats_of as _stats


def reference_obq(weight: torch.Tensor, hessian: torch.Tensor, scales: torch.Tensor, bits: int,
                  zeros: torch.Tensor | None = None) -> torch.Tensor:
    """Optimal Brain Quantization in fixed column order: for each row, quantize w_j, move the rest by
    −(w_j − q)/[H⁻¹]_jj·H⁻¹[:, j], then remove j from H⁻¹ (Frantar & Alistarh 2022, eqs. 2-3).
    With ``zeros`` (per weight) the grid is asymmetric: (clamp(round(w/s) + z, 0, 2^b − 1) − z)·s."""
    q_min, q_max = weight_code_range(bits)
    result = weight.clone()
    for r in range(weight.shape[0]):
        w, inverse = weight[r].clone(), torch.linalg.inv(hessian)
        for j in range(weight.shape[1]):
            if zeros is None:
                q = scales[r, j] * torch.clamp(torch.round(w[j] / scales[r, j]), q_min, q_max)
            else:
                z = zeros[r, j]
                q = scales[r, j] * (torch.clamp(torch.round(w[j] / scales[r, j]) + z, 0, 2**bits - 1) - z)
            w = w - (w[j] - q) / inverse[j, j] * inverse[:, j]
            w[j] = q
            inverse = inverse - torch.outer(inverse[:, j], inverse[j, :]) / inverse[j, j]
        result[r] = w
    return result


@pytest.mark.parametrize("block_size", [1, 7, 128])
@pytest.mark.parametrize("weight_block", [None, 4])
def test_gptq_equals_reference_obq(block_size: int, weight_block: int | None) -> None:
    weight, x = _problem()
    stats = _stats(x)
    settings = ReconstructSettings(bits=3, weight_block=weight_block, damp=0.0, block_size=block_size, act_order=False,
                                   refit_scales=False)
    result = reconstruct_layer(weight, stats, settings)
    scales = column_scales(grid_scales(weight, 3, weight_block, torch.diagonal(stats.hessian[0])), weight.shape[1])
    expected = reference_obq(weight, stats.hessian[0], scales, 3)
    torch.testing.assert_close(result.weight, expected, rtol=1e-6, atol=1e-6)
    assert result.damp == 0.0 and result.damp_raises == 0


@pytest.mark.parametrize("block_size", [1, 7])
def test_asymmetric_gptq_equals_reference_obq(block_size: int) -> None:
    weight, x = _problem(seed=5)
    weight[:, :4] = weight[:, :4].abs() + 0.5  # a block of positive weights: its zero point is 0
    stats = _stats(x)
    settings = ReconstructSettings(bits=3, weight_block=4, damp=0.0, block_size=block_size, act_order=False,
                                   refit_scales=False, symmetric=False)
    result = reconstruct_layer(weight, stats, settings)
    scales, zeros = asymmetric_grid(weight, 3, 4, torch.diagonal(stats.hessian[0]))
    assert (zeros[:, 0] == 0).all() and ((zeros > 0) & (zeros < 7)).any()
    torch.testing.assert_close(result.scales, scales)
    torch.testing.assert_close(result.zero_points, zeros)
    expected = reference_obq(weight, stats.hessian[0], column_scales(scales, 20), 3, column_scales(zeros, 20))
    torch.testing.assert_close(result.weight, expected, rtol=1e-6, atol=1e-6)
    codes = result.codes(3)
    assert codes.min() >= 0 and codes.max() <= 7
    torch.testing.assert_close((codes - column_scales(zeros, 20)) * column_scales(scales, 20), result.weight, rtol=0, atol=1e-12)


def test_asymmetric_grid_is_the_best_clip_by_brute_force() -> None:
    weight, _ = _problem(rows=3, columns=8, seed=6)
    importance = torch.linspace(0.5, 2.0, 8, dtype=torch.float64)
    scales, zeros = asymmetric_grid(weight, 2, 4, importance)
    for r in range(3):
        for j in range(2):
            block, energy = weight[r, 4 * j : 4 * j + 4], importance[4 * j : 4 * j + 4]
            candidates = []
            for clip in [0.5 + 0.05 * i for i in range(11)]:
                low, high = clip * min(float(block.min()), 0.0), clip * max(float(block.max()), 0.0)
                s = (high - low) / 3
                z = min(max(round(-low / s), 0), 3)
                values = (torch.clamp(torch.round(block / s) + z, 0, 3) - z) * s
                candidates.append((float(((values - block) ** 2 * energy).sum()), s, z))
            error, s, z = min(candidates, key=lambda c: c[0])
            assert float(scales[r, j]) == pytest.approx(s, rel=1e-12) and float(zeros[r, j]) == z


def test_asymmetric_needs_blocks() -> None:
    with pytest.raises(ConfigError, match="weight_block"):
        ReconstructSettings(bits=4, symmetric=False)


@pytest.mark.parametrize("act_order", [False, True])
def test_predicted_error_equals_measured_output_error(act_order: bool) -> None:
    weight, x = _problem(seed=1)
    result = reconstruct_layer(weight, _stats(x), ReconstructSettings(bits=2, damp=0.0, block_size=8, act_order=act_order))
    measured = _output_error(result.weight - weight, x)
    assert result.predicted_error == pytest.approx(measured, rel=1e-6)
    torch.testing.assert_close(result.row_error.sum(), torch.tensor(measured, dtype=torch.float64), rtol=1e-6, atol=0)


def test_damped_prediction_is_the_damped_objective() -> None:
    weight, x = _problem(seed=2)
    stats = _stats(x)
    result = reconstruct_layer(weight, stats, ReconstructSettings(bits=3, damp=0.05))
    hessian = stats.hessian[0] + 0.05 * torch.diagonal(stats.hessian[0]).mean() * torch.eye(weight.shape[1])
    delta = result.weight - weight
    assert result.predicted_error == pytest.approx(float(0.5 * torch.einsum("rk,kl,rl->", delta, hessian, delta)), rel=1e-7)


@pytest.mark.parametrize("weight_block", [None, 4])
def test_act_order_keeps_static_grid_and_beats_round_to_nearest(weight_block: int | None) -> None:
    weight, x = _problem(columns=16, seed=3)
    x = x * torch.linspace(0.1, 3.0, 16, dtype=torch.float64)  # unequal input scales: order matters
    stats = _stats(x)
    result = reconstruct_layer(weight, stats, ReconstructSettings(bits=3, weight_block=weight_block, refit_scales=False))
    scales = grid_scales(weight, 3, weight_block, torch.diagonal(stats.hessian[0]))
    torch.testing.assert_close(result.scales, scales)  # fixed on the original weight, original order
    expanded = column_scales(scales, 16)
    torch.testing.assert_close(result.codes(3) * expanded, result.weight, rtol=0, atol=1e-12)
    q_min, q_max = weight_code_range(3)
    assert q_min <= result.codes(3).min() and result.codes(3).max() <= q_max
    nearest = expanded * torch.clamp(torch.round(weight / expanded), q_min, q_max)
    assert _output_error(result.weight - weight, x) < 0.8 * _output_error(nearest - weight, x)
    plain = column_scales(grid_scales(weight, 3, weight_block), 16)  # the clip that ignores H
    assert _output_error(nearest - weight, x) <= _output_error(plain * torch.clamp(torch.round(weight / plain), q_min, q_max) - weight, x)


def test_dead_inputs_get_zero_weights() -> None:
    weight, x = _problem(seed=4)
    x[:, [3, 11]] = 0
    result = reconstruct_layer(weight, _stats(x), ReconstructSettings(bits=4))
    assert torch.all(result.weight[:, [3, 11]] == 0) and result.damp_raises == 0


def test_singular_hessian_raises_and_records_damping() -> None:
    x = torch.tensor([[1.0, 2.0, 1.0], [3.0, -1.0, 3.0], [0.0, 1.0, 0.0], [2.0, 2.0, 2.0]], dtype=torch.float64)
    weight = torch.tensor([[0.3, -0.7, 0.9], [1.1, 0.2, -0.4]], dtype=torch.float64)  # columns 0 and 2 equal in X
    result = reconstruct_layer(weight, _stats(x), ReconstructSettings(bits=4, damp=0.0, act_order=False))
    assert result.damp_raises >= 1 and result.damp > 0
    assert torch.isfinite(result.weight).all()


def test_grouped_conv_prediction_matches_unfolded_output_error() -> None:
    from torch import nn

    from compress.reconstruct.stats import collect_layer_stats, layer_samples

    torch.manual_seed(5)
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False).double()
    batches = [torch.randn(4, 4, 6, 6, dtype=torch.float64) for _ in range(2)]
    stats = collect_layer_stats(nn.Sequential(conv), batches, ["0"])["0"]
    result = reconstruct_layer(conv.weight, stats, ReconstructSettings(bits=2, damp=0.0))
    with torch.no_grad():
        delta = torch.cat([conv(b) for b in batches]) - torch.cat(
            [nn.functional.conv2d(b, result.weight, padding=1, groups=2) for b in batches])
    measured = float(delta.pow(2).sum() / stats.count)
    assert result.predicted_error == pytest.approx(measured, rel=1e-6)
    assert layer_samples(conv, batches[0]).shape == (2, 4 * 36, 18)


def test_option_error_prices_both_methods_in_output_units() -> None:
    from compress.reconstruct.price import option_error

    weight, x = _problem(seed=11)
    priced = option_error(weight, _stats(x), ReconstructSettings(bits=3, ratio=0.25))
    result = reconstruct_layer(weight, _stats(x), ReconstructSettings(bits=3, ratio=0.25))
    assert priced.reconstructed == pytest.approx(_output_error(result.weight - weight, x), rel=1e-9)
    from compress.prune.masks import pruning_mask
    from compress.quant.weights import fake_quantize_per_channel

    first = fake_quantize_per_channel(weight * pruning_mask(weight, 0.25, "unstructured"), 3)
    assert priced.first_order == pytest.approx(_output_error(first - weight, x), rel=1e-9)
    assert priced.reconstructed < priced.first_order


def test_option_error_prices_asymmetric_blocks_on_their_own_grid() -> None:
    from compress.reconstruct.price import option_error

    weight, x = _problem(seed=12)
    priced = option_error(weight, _stats(x), ReconstructSettings(bits=3, weight_block=4, symmetric=False))
    scales, zeros = asymmetric_grid(weight, 3, 4)
    s, z = column_scales(scales, 20), column_scales(zeros, 20)
    first = (torch.clamp(torch.round(weight / s) + z, 0, 7) - z) * s
    assert priced.first_order == pytest.approx(_output_error(first - weight, x), rel=1e-9)
    assert priced.reconstructed < priced.first_order
