"""What one (layer, option) costs after reconstruction, for the planner: the layer objective of the
second-order result next to that of round-to-nearest / magnitude pruning, in the same units.

Both are E = Σ_r ρ_r·½·Δw_r·H·Δw_rᵀ = Σ_r ρ_r·‖Δw_r·Xᵀ‖²/N over the calibration statistics (H undamped,
ρ ≡ 1 unless loss-aware row weights are given), computed from the weight each method produces. The
planner maps E to loss units as it does today (trace- or K-FAC-weighted); reconstructing each candidate
once and caching the pair is cheap next to the statistics, which all options of a layer share.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compress.prune.masks import pruning_mask
from compress.quant.weights import fake_quantize_per_channel
from compress.reconstruct.gptq import asymmetric_grid, column_scales, grid_scales, round_to_grid
from compress.reconstruct.layer import ReconstructSettings, reconstruct_layer
from compress.reconstruct.stats import LayerStats


@dataclass(frozen=True)
class OptionError:
    """Layer objective of one option: ``reconstructed`` (GPTQ / SparseGPT) and ``first_order``
    (round-to-nearest with max scales, or the block grid — asymmetric where the settings say so —
    and magnitude masks)."""

    reconstructed: float
    first_order: float


def layer_objective(delta: torch.Tensor, stats: LayerStats, row_weights: torch.Tensor | None = None) -> float:
    """Σ_r ρ_r·½·Δw_r·H_g(r)·Δw_rᵀ for a weight change ``delta`` (any weight shape)."""
    rows = delta.detach().reshape(stats.groups, -1, stats.dim).double()  # [groups, rows per group, K]
    per_row = 0.5 * torch.einsum("grk,gkl,grl->gr", rows, stats.hessian, rows).reshape(-1)
    return float(per_row.sum() if row_weights is None else (row_weights.double() * per_row).sum())


def option_error(weight: torch.Tensor, stats: LayerStats, settings: ReconstructSettings,
                 row_weights: torch.Tensor | None = None) -> OptionError:
    """Both objectives for ``weight`` compressed as ``settings`` says (bits, block, ratio, pattern)."""
    weight = weight.detach().double()
    result = reconstruct_layer(weight, stats, settings, row_weights)
    first_order = weight
    if settings.prunes:
        first_order = first_order * pruning_mask(first_order, settings.ratio, settings.pattern)
    if settings.bits is not None:
        if settings.weight_block is None:
            first_order = fake_quantize_per_channel(first_order, settings.bits)
        else:
            rows = first_order.reshape(first_order.shape[0], -1)
            if settings.symmetric:
                scales, zeros = grid_scales(rows, settings.bits, settings.weight_block), None
            else:
                scales, zeros = asymmetric_grid(rows, settings.bits, settings.weight_block)
                zeros = column_scales(zeros, rows.shape[1])
            first_order = round_to_grid(rows, column_scales(scales, rows.shape[1]), settings.bits, zeros).reshape(weight.shape)
    return OptionError(layer_objective(result.weight - weight, stats, row_weights),
                       layer_objective(first_order - weight, stats, row_weights))
