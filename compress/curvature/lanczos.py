"""Lanczos tridiagonalisation with full reorthogonalisation (Golub & Van Loan, §10.1).

After k steps from a unit vector q₁, QᵀHQ = T (tridiagonal, diagonal α, off-diagonal β); the
Ritz values eig(T) approximate the extreme eigenvalues of H, and (eigvecs of T)[0, :]² are the
Gauss quadrature weights used by stochastic Lanczos quadrature.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

Matvec = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LanczosResult:
    alphas: np.ndarray
    betas: np.ndarray  # length len(alphas) - 1
    basis: torch.Tensor  # (k, dim), orthonormal rows

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """(Ritz values ascending, quadrature weights = squared first components)."""
        from scipy.linalg import eigh_tridiagonal

        values, vectors = eigh_tridiagonal(self.alphas, self.betas)
        return values, vectors[0, :] ** 2


def lanczos(
    matvec: Matvec,
    start: torch.Tensor,
    steps: int,
    on_product: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    out_of_time: Callable[[], bool] = lambda: False,
) -> LanczosResult:
    """Run up to ``steps`` Lanczos steps from ``start``; stops early when the Krylov space is
    invariant or ``out_of_time()``. ``on_product(q, Hq)`` sees every product."""
    basis = torch.empty(min(steps, start.numel()), start.numel(), dtype=start.dtype)
    alphas: list[float] = []
    betas: list[float] = []
    q = start / start.norm()
    for j in range(basis.shape[0]):
        basis[j] = q
        w = matvec(q)
        if on_product is not None:
            on_product(q, w)
        alphas.append(float(torch.dot(q.double(), w.double())))
        for _ in range(2):  # classical Gram-Schmidt, twice, against every earlier vector
            w = w - basis[: j + 1].T @ (basis[: j + 1] @ w)
        beta = float(w.norm())
        if j + 1 == basis.shape[0] or beta <= 1e-10 * max(abs(a) for a in alphas) or out_of_time():
            return LanczosResult(np.array(alphas), np.array(betas), basis[: j + 1])
        betas.append(beta)
        q = w / beta
    return LanczosResult(np.array(alphas), np.array(betas), basis)
