"""Drift-aware low-rank factors: fit the factors to the float model's output, on the inputs the
already factorised earlier layers produce (the closed-form analogue for ranks of GPTQ's input-drift
correction, ``compress/reconstruct/drift.py``).

Factorising true-sequentially, layer ℓ sees inputs x̃ from the already factorised layers before it,
while the float model computed W·x on its own input x. Per output row, with H̃ = 2·Σ x̃x̃ᵀ/N,
C = 2·Σ x̃xᵀ/N and H = 2·Σ xxᵀ/N (``DriftAccumulator``), the objective of a rank-r Ŵ

    D(Ŵ) = Σ_t ‖W·x_t − Ŵ·x̃_t‖²/N = ½·tr((Ŵ − W*)·H̃·(Ŵ − W*)ᵀ) + D(W*),   H̃·W*ᵀ = C·Wᵀ,

splits into the unreachable floor D(W*) (the best any full-rank weight does on x̃) and a quadratic
in the H̃ metric around the least-squares target W* = W·C·H̃⁻¹. The rank-r minimiser is therefore
the whitened truncated SVD (``factorize.py``, SVD-LLM) of W* in the metric H̃ — reduced-rank
regression (Izenman 1975) — and the predicted error is D(W*) + ½·Σ_{i>r} σ_i². Row weights d (the
output Fisher diagonal) weight both terms row by row. With x̃ = x, C = H̃ = H and W* = W: plain
whitened SVD.

W* comes from ``reconstruct.drift.float_target`` (``drift_target``) unchanged: a ridge regression toward W with the
ridge chosen by generalised cross-validation (W* fits up to n inputs to N calibration samples).
The split above is exact for the exact least-squares W* (ridge 0) and undamped whitening; with the
ridge and damping the prediction is approximate and the record also keeps the measured D(Ŵ).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from compress.errors import InputError
from compress.lowrank.factorize import WeightedSVD, weighted_svd, whitening_factor
from compress.reconstruct.drift import drift_objective, float_target
from compress.reconstruct.stats import LayerStats


def drift_svds(weights: torch.Tensor, stats: LayerStats, damping: float, row_weights: torch.Tensor | None = None,
               name: str = "layer", ridge: float | None = None) -> list[WeightedSVD]:
    """Per group of ``weights`` [groups, m, n] (float64): the weighted SVD of the drift target W*_g
    in the damped metric H̃_g, with floor Σ_i d_i·D_i(W*_g) (d = 1 without ``row_weights``, the
    damped diagonal of all groups' rows). ``stats``: drift statistics of the layer (H̃, C, H);
    ``ridge``: a fixed relative ridge for W* instead of the GCV choice (0: exact least squares)."""
    if stats.cross is None or stats.reference_hessian is None:
        raise InputError(f"{name}: input_drift needs drift statistics (the float model's inputs paired with "
                         "the factorised model's); collect them true-sequentially")
    groups, m, n = weights.shape
    targets = float_target(weights.reshape(groups * m, n), stats, ridge).rows.reshape(groups, m, n)
    svds = []
    for g in range(groups):
        rows = None if row_weights is None else row_weights[g * m:(g + 1) * m]
        floor = drift_objective(weights[g], targets[g], stats, g)
        floor = floor if rows is None else rows * floor
        svd = weighted_svd(targets[g], whitening_factor(stats.hessian[g], damping, name), rows)
        svds.append(replace(svd, floor=float(floor.sum())))
    return svds

