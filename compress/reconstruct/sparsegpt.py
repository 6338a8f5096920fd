"""Which weights to prune inside the sweep (SparseGPT, Frantar & Alistarh 2023, arXiv 2301.00774),
and Wanda's one-shot mask (Sun et al. 2024, arXiv 2306.11695) as the cheap baseline.

SparseGPT removes, among the weights of the current columns, those whose removal raises the layer
objective least: the OBS cost w²/U_ii² (U_ii² = [H_F⁻¹]_ii), evaluated on the already-compensated
weights when the sweep reaches the group. Loss-aware, each row's cost is multiplied by its output
weight ρ_r (the layer-level choice is then made in loss units rather than output units).
- unstructured: per group of columns, the lowest-cost weights over all rows; counts per group are
  cumulative roundings of ratio·(weights seen), so the layer keeps exactly round((1 − ratio)·n).
- N:M: in every row, the M − N lowest-cost of each M consecutive columns (M columns = one group).
Wanda scores |w_ij|·‖X_j‖ (‖X_j‖² ∝ H_jj) and prunes per output row, without any update.
"""

from __future__ import annotations

import torch


def _lowest(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Keep mask (same shape) that drops the ``count`` lowest scores (ties: earlier position first)."""
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    keep[torch.argsort(scores.flatten(), stable=True)[:count]] = False
    return keep.reshape(scores.shape)


class UnstructuredSelector:
    """Drops the lowest-cost weights of each group of ``width`` columns; exact layer ratio."""

    def __init__(self, ratio: float, width: int) -> None:
        self.ratio, self.width = ratio, width
        self.row_weights: torch.Tensor | None = None  # ρ_r of the rows being swept (loss-aware)
        self.seen = self.pruned = 0

    def __call__(self, start: int, weights: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
        scores = weights.pow(2) / diagonal.pow(2)
        if self.row_weights is not None:
            scores = scores * self.row_weights[:, None]
        self.seen += weights.numel()
        count = round(self.ratio * self.seen) - self.pruned
        self.pruned += count
        return _lowest(scores, count)


class NMSelector:
    """Keeps, in every row, the ``n`` highest-cost of each ``m`` consecutive columns."""

    def __init__(self, n: int, m: int) -> None:
        self.n, self.width = n, m

    def __call__(self, start: int, weights: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
        scores = weights.pow(2) / diagonal.pow(2)
        top = torch.topk(scores, self.n, dim=1).indices
        return torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top, True)


class FixedSelector:
    """A mask chosen before the sweep (e.g. Wanda's), applied column by column."""

    width = 1

    def __init__(self, keep: torch.Tensor) -> None:
        self.keep = keep

    def __call__(self, start: int, weights: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
        return self.keep[:, start : start + 1]


def wanda_keep(weight: torch.Tensor, hessian_diagonal: torch.Tensor, ratio: float, pattern: str) -> torch.Tensor:
    """Wanda's keep mask for ``weight`` [R, K] with input norms ∝ √diag(H) ([K], or [R, K] when rows
    see different inputs, as the groups of a grouped conv do): per row (or per group
    of 4 columns for 2:4) the lowest |w|·‖X_j‖ are dropped; row counts are cumulative roundings so
    the layer total is round(ratio·n)."""
    scores = weight.abs() * hessian_diagonal.clamp(min=0).sqrt()
    if pattern == "2:4":
        return NMSelector(2, 4)(0, scores.reshape(-1, 4), torch.ones(4, dtype=scores.dtype)).reshape(weight.shape)
    rows, columns = weight.shape
    keep = torch.ones_like(weight, dtype=torch.bool)
    for row in range(rows):
        count = round(ratio * (row + 1) * columns) - round(ratio * row * columns)
        keep[row] = _lowest(scores[row], count)
    return keep
