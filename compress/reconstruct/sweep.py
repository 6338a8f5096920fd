"""The column sweep shared by GPTQ and SparseGPT (Frantar et al. 2022, arXiv 2210.17323, Alg. 1;
Frantar & Alistarh 2023, arXiv 2301.00774, Alg. 1).

Rows of W ∈ R^{R×K} are reconstructed independently against the objective ½·Δw·H·Δwᵀ. Columns are
fixed in order; with U the upper Cholesky factor of H⁻¹, fixing column i to q gives the OBS update of
the remaining columns: err = (w_i − q)/U_ii, W[:, j>i] −= err·U[i, j>i], and raises the objective by
exactly (w_i − q)²/U_ii²/2 (U_ii² = [H_F⁻¹]_ii over the still-free columns F). Summed over the sweep
this is the final ½·Δw·H·Δwᵀ of each row. Updates are applied lazily: inside a block of columns, and
to the columns after it once per block (same result, fewer memory passes).

What a column becomes is left to two callbacks: ``select`` (pruning: at the start of each selection
group, which of the current weights to keep, from the scores w²/U_ii²) and ``target`` (the value a
kept weight is fixed to: its quantized value, or itself when only pruning).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

# target(column index, current column values [R]) -> fixed values [R]
Target = Callable[[int, torch.Tensor], torch.Tensor]


class Selector(Protocol):
    """Chooses which weights to keep; called at the start of every group of ``width`` columns."""

    width: int

    def __call__(self, start: int, weights: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
        """``weights`` [R, w] (current values of columns start…start+w), ``diagonal`` [w] (U_ii) →
        the keep mask [R, w]."""
        ...


@dataclass(frozen=True)
class SweepResult:
    """The fixed weights [R, K], the keep mask (None without a selector) and each row's objective
    increase Σ_i (w_i − q_i)²/U_ii²/2 (= ½·Δw·(H + λI)·Δwᵀ)."""

    weight: torch.Tensor
    keep: torch.Tensor | None
    row_error: torch.Tensor


def obs_sweep(weight: torch.Tensor, upper: torch.Tensor, target: Target, select: Selector | None = None,
              block_size: int = 128) -> SweepResult:
    """Fix every column of ``weight`` (float64, [R, K], modified copy) in order, compensating the
    later columns; ``upper`` is U with (H + λI)⁻¹ = UᵀU."""
    weight = weight.clone()
    rows, columns = weight.shape
    if select is not None and block_size % select.width:
        block_size = select.width * max(1, block_size // select.width)
    fixed = torch.zeros_like(weight)
    keep = None if select is None else torch.ones_like(weight, dtype=torch.bool)
    row_error = torch.zeros(rows, dtype=weight.dtype)
    for start in range(0, columns, block_size):
        stop = min(start + block_size, columns)
        block, factor = weight[:, start:stop].clone(), upper[start:stop, start:stop]
        errors = torch.zeros_like(block)
        for i in range(stop - start):
            column = start + i
            if select is not None and column % select.width == 0:
                width = min(select.width, stop - column)
                keep[:, column : column + width] = select(column, block[:, i : i + width], torch.diagonal(factor)[i : i + width])
            value = target(column, block[:, i])
            if keep is not None:
                value = torch.where(keep[:, column], value, torch.zeros_like(value))
            fixed[:, column] = value
            errors[:, i] = (block[:, i] - value) / factor[i, i]
            row_error += errors[:, i].pow(2) / 2
            block[:, i:] -= errors[:, i : i + 1] * factor[i : i + 1, i:]
        weight[:, stop:] -= errors @ upper[start:stop, stop:]
    return SweepResult(fixed, keep, row_error)
