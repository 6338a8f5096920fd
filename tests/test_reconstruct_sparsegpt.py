"""SparseGPT and Wanda on random least-squares problems: the exact ratio, the 2:4 pattern, never
worse than magnitude pruning on the layer objective, prediction = measurement, joint with GPTQ."""

from __future__ import annotations

import pytest
import torch

from compress.prune.masks import pruning_mask
from compress.reconstruct.layer import ReconstructSettings, reconstruct_layer
from compress.reconstruct.sparsegpt import wanda_keep
from tests.helpers.least_squares import output_error as _output_error, problem as _problem, stats_of as _stats


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("pattern,ratio", [("unstructured", 0.5), ("unstructured", 0.3), ("2:4", 0.5)])
def test_sparsegpt_keeps_ratio_and_pattern_and_beats_magnitude(seed: int, pattern: str, ratio: float) -> None:
    weight, x = _problem(rows=7, columns=24, seed=seed)
    settings = ReconstructSettings(ratio=ratio, pattern=pattern, damp=0.0, block_size=8)
    exact = reconstruct_layer(weight, _stats(x), settings)
    settings = ReconstructSettings(ratio=ratio, pattern=pattern)
    result = reconstruct_layer(weight, _stats(x), settings)
    assert int((~result.keep).sum()) == round(ratio * weight.numel())
    assert torch.all(result.weight[~result.keep] == 0) and torch.all(result.weight[result.keep] != 0)
    if pattern == "2:4":
        assert torch.all(result.keep.reshape(7, -1, 4).sum(-1) == 2)
    magnitude = weight * pruning_mask(weight, ratio, pattern)
    assert _output_error(result.weight - weight, x) <= _output_error(magnitude - weight, x)
    assert exact.predicted_error == pytest.approx(_output_error(exact.weight - weight, x), rel=1e-6)


def test_joint_sparsity_and_quantization_in_one_sweep() -> None:
    weight, x = _problem(rows=5, columns=16, seed=7)
    result = reconstruct_layer(weight, _stats(x), ReconstructSettings(bits=4, ratio=0.5, damp=0.0, block_size=4))
    assert int((~result.keep).sum()) == 40 and torch.all(result.weight[~result.keep] == 0)
    expanded = result.scales[:, None].expand_as(weight)
    torch.testing.assert_close(result.codes(4) * expanded, result.weight, rtol=0, atol=1e-12)
    assert result.predicted_error == pytest.approx(_output_error(result.weight - weight, x), rel=1e-6)


def test_loss_aware_rows_move_the_layer_level_choice() -> None:
    weight, x = _problem(rows=4, columns=16, seed=8)
    row_weights = torch.tensor([100.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    plain = reconstruct_layer(weight, _stats(x), ReconstructSettings(ratio=0.5, damp=0.0))
    aware = reconstruct_layer(weight, _stats(x), ReconstructSettings(ratio=0.5, damp=0.0), row_weights)
    assert (~aware.keep[0]).sum() < (~plain.keep[0]).sum()  # the heavy row keeps more of its weights
    assert aware.predicted_error <= plain.predicted_error * 0 + float((row_weights * plain.row_error).sum())


def test_wanda_mask_is_the_per_row_lowest_weight_times_input_norm() -> None:
    weight, x = _problem(rows=3, columns=8, seed=9)
    keep = wanda_keep(weight, torch.diagonal(_stats(x).hessian[0]), 0.5, "unstructured")
    norms = x.norm(dim=0)
    for row in range(3):
        dropped = torch.argsort(weight[row].abs() * norms)[:4]
        assert set(torch.nonzero(~keep[row]).flatten().tolist()) == set(dropped.tolist())
    result = reconstruct_layer(weight, _stats(x), ReconstructSettings(ratio=0.5, prune_method="wanda", damp=0.0))
    torch.testing.assert_close(result.keep, keep)  # the sweep keeps Wanda's mask and compensates the rest
