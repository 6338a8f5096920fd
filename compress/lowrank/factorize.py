"""Truncated SVD of a weight matrix in a weighted norm: plain, input-whitened, output-weighted.

For W (m×n), a row weighting D = diag(d) (the output-side Fisher diagonal, FWSVD: Hsu et al. 2022,
arXiv 2207.00112) and an input metric H = L·Lᵀ (the layer statistics 2·XXᵀ/N, SVD-LLM: Wang et al.
2024, arXiv 2403.07378), the rank-r W_r minimising ‖D^½·(W − W_r)·L‖_F is (Eckart–Young in the
weighted norm)

    D^½·W·L = U Σ Vᵀ,   W_r = D^-½ · U_r Σ_r V_rᵀ · L⁻¹,

and the minimum is the sum of the discarded σ_i². We return the two factors
first = Σ_r^½ V_rᵀ L⁻¹ (r×n) and second = D^-½ U_r Σ_r^½ (m×r), balanced so that both have
singular values Σ_r^½ (kind to later quantization), with W_r = second · first.

With H, ½·tr(ΔW·H·ΔWᵀ) = (1/N)·Σ_t ‖ΔW·x_t‖² is the layer's mean squared output error over its N
calibration samples (``compress/reconstruct/stats.py``), so the predicted error ½·Σ_{i>r} σ_i²
*is* that output error (weighted by d when D is given). Damping adds δ·mean(diag H) to the
diagonal of H (δ·mean(d) to d); it keeps L invertible for dead or collinear inputs and raises the
predicted error above the undamped output error by exactly ½·δ·mean(diag H)·‖ΔW‖_F² (0 at δ = 0).
Without H the metric is the (weighted) Frobenius norm Σ_i d_i·‖ΔW_i‖², with no ½.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compress.errors import ConfigError


@dataclass(frozen=True)
class Factors:
    """W ≈ second @ first; ``predicted_error`` in the metric described in the module docstring."""

    first: torch.Tensor
    second: torch.Tensor
    predicted_error: float


def damped(diagonal_or_matrix: torch.Tensor, damping: float) -> torch.Tensor:
    """A vector d or a square matrix H with δ·mean(d) (δ·mean(diag H)) added to its diagonal."""
    if diagonal_or_matrix.ndim == 1:
        return diagonal_or_matrix + damping * diagonal_or_matrix.mean()
    extra = damping * diagonal_or_matrix.diagonal().mean()
    return diagonal_or_matrix + extra * torch.eye(diagonal_or_matrix.shape[0], dtype=diagonal_or_matrix.dtype)


def whitening_factor(hessian: torch.Tensor, damping: float, layer: str = "layer") -> torch.Tensor:
    """The lower Cholesky factor L of the damped H (L·Lᵀ = H + δ·mean(diag H)·I), in float64."""
    factor, info = torch.linalg.cholesky_ex(damped(hessian.to(torch.float64), damping))
    if int(info) != 0:
        raise ConfigError(f"{layer}: its input statistics H are singular (Cholesky failed at column {int(info)}) "
                          f"with damping {damping}; raise damping (e.g. 0.01)")
    return factor


@dataclass(frozen=True)
class WeightedSVD:
    """D^½·W·L = U·diag(σ)·Vᵀ, with the row scale D^½ (or None) and L (or None) kept to undo them.
    ``floor``: the error no rank removes, added to every rank's (0 unless the factorised W is a
    target fitted to another matrix's outputs, ``lowrank/drift.py``)."""

    u: torch.Tensor
    sigma: torch.Tensor
    vh: torch.Tensor
    scale: torch.Tensor | None
    whitening: torch.Tensor | None
    floor: float = 0.0

    def errors(self) -> torch.Tensor:
        """Predicted error of every rank r = 0 … min(m, n): floor + Σ_{i≥r} σ_i² (½ of the sum with L)."""
        tails = (self.sigma.flip(0) ** 2).cumsum(0).flip(0)
        tails = torch.cat([tails, tails.new_zeros(1)])
        return self.floor + (tails / 2 if self.whitening is not None else tails)


def weighted_svd(weight: torch.Tensor, whitening: torch.Tensor | None = None,
                 row_weights: torch.Tensor | None = None) -> WeightedSVD:
    """The SVD of D^½·W·L in float64. ``whitening``: L (n×n, lower triangular, from
    ``whitening_factor``) or None for L = I. ``row_weights``: the (already damped, positive)
    diagonal d of D, or None for D = I."""
    matrix = weight.to(torch.float64)
    scale = None if row_weights is None else row_weights.to(torch.float64).sqrt()
    if scale is not None:
        matrix = scale[:, None] * matrix
    if whitening is not None:
        matrix = matrix @ whitening
    u, sigma, vh = torch.linalg.svd(matrix, full_matrices=False)
    return WeightedSVD(u, sigma, vh, scale, whitening)


def truncated_factors(svd: WeightedSVD, rank: int) -> Factors:
    """Rank-``rank`` factors minimising ‖D^½·ΔW·L‖_F, from the weighted SVD."""
    root = svd.sigma[:rank].sqrt()
    first = root[:, None] * svd.vh[:rank]
    if svd.whitening is not None:  # first · L⁻¹ = (L⁻ᵀ · firstᵀ)ᵀ
        first = torch.linalg.solve_triangular(svd.whitening.T, first.T, upper=True).T
    second = svd.u[:, :rank] * root[None, :]
    if svd.scale is not None:
        second = second / svd.scale[:, None]
    return Factors(first, second, float(svd.errors()[rank]))
