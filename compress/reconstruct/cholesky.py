"""The inverse-Hessian factor of the GPTQ/SparseGPT sweep, with damping raised on failure.

The sweep needs U, the upper Cholesky factor of (H + λI)⁻¹ (so (H + λI)⁻¹ = UᵀU; Frantar et al.
2022, §4 step 3). λ = damp · mean(diag H), damp 1% by default. A singular or ill-conditioned H makes
the factorisation fail (or leave a pivot L_ii² below ``PIVOT_FLOOR``·max(diag): numerically singular,
where round-off alone would let it "succeed" with a meaningless inverse); then damp is raised ten-fold (at least to ``FIRST_RAISE``) and the raise is
reported with the result — never a silent fall-back to round-to-nearest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compress.errors import InputError

FIRST_RAISE = 1e-4
MAX_DAMP = 100.0
PIVOT_FLOOR = 1e-10


@dataclass(frozen=True)
class InverseFactor:
    """U with (H + λI)⁻¹ = UᵀU; ``damp`` the relative damping used, ``raises`` how often it was raised."""

    upper: torch.Tensor
    damp: float
    raises: int


def fix_dead_inputs(hessian: torch.Tensor) -> torch.Tensor:
    """Inputs that are always zero (H_ii = 0) get H_ii = 1 so H is invertible; their weights do not
    affect the output and are set to 0 by the caller. Returns the mask of dead inputs."""
    dead = torch.diagonal(hessian) == 0
    hessian[dead, dead] = 1.0
    return dead


def inverse_factor(hessian: torch.Tensor, damp: float) -> InverseFactor:
    """U = chol((H + λI)⁻¹)ᵀ (upper), raising ``damp`` until both factorisations succeed."""
    if not torch.isfinite(hessian).all():
        raise InputError("layer statistics contain NaN or infinity; check the calibration data and the model")
    scale = float(torch.diagonal(hessian).mean())
    eye = torch.eye(hessian.shape[0], dtype=hessian.dtype)
    raises = 0
    while damp <= MAX_DAMP:
        damped = hessian + damp * scale * eye
        lower, info = torch.linalg.cholesky_ex(damped)
        if int(info) == 0 and _well_conditioned(lower, damped):
            lower_inverse = torch.linalg.solve_triangular(lower, eye, upper=False)
            upper, info = torch.linalg.cholesky_ex(lower_inverse.T @ lower_inverse, upper=True)  # (LLᵀ)⁻¹
            if int(info) == 0 and torch.isfinite(upper).all():
                return InverseFactor(upper, damp, raises)
        damp, raises = max(10 * damp, FIRST_RAISE), raises + 1
    raise InputError(f"layer Hessian is not positive definite even with damping {MAX_DAMP} x mean(diag H)")


def _well_conditioned(lower: torch.Tensor, matrix: torch.Tensor) -> bool:
    return bool(torch.diagonal(lower).pow(2).min() > PIVOT_FLOOR * torch.diagonal(matrix).max())
