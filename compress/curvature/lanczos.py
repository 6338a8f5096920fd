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
    see = None if on_product is None else (lambda q, w: on_product(q[0], w[0]))
    return lanczos_runs(lambda block: matvec(block[0])[None], start[None], steps, see, out_of_time)[0]


def lanczos_runs(
    matmat: Matvec,
    starts: torch.Tensor,
    steps: int,
    on_products: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
    out_of_time: Callable[[], bool] = lambda: False,
) -> list[LanczosResult]:
    """Independent Lanczos runs, one from each row of ``starts`` (k x dim), in lockstep: each step
    multiplies the k current vectors in one ``matmat`` call (k x dim -> k x dim), so batched
    products serve all runs. A run leaves the block when its Krylov space is invariant;
    ``on_products(Q, HQ)`` sees every block product."""
    count, dim = starts.shape
    length = min(steps, dim)
    bases = torch.empty(count, length, dim, dtype=starts.dtype)
    alphas: list[list[float]] = [[] for _ in range(count)]
    betas: list[list[float]] = [[] for _ in range(count)]
    sizes = [0] * count
    active = list(range(count))
    current = starts / starts.norm(dim=1, keepdim=True)
    for j in range(length):
        bases[active, j] = current
        products = matmat(current)
        if on_products is not None:
            on_products(current, products)
        still = []
        for row, run in enumerate(active):
            sizes[run] = j + 1
            q, w, basis = current[row], products[row], bases[run, : j + 1]
            alphas[run].append(float(torch.dot(q.double(), w.double())))
            for _ in range(2):  # classical Gram-Schmidt, twice, against every earlier vector
                w = w - basis.T @ (basis @ w)
            beta = float(w.norm())
            if j + 1 < length and beta > 1e-10 * max(abs(a) for a in alphas[run]):
                betas[run].append(beta)
                still.append((run, w / beta))
        if not still or out_of_time():
            break
        active = [run for run, _ in still]
        current = torch.stack([q for _, q in still])
    return [LanczosResult(np.array(alphas[run]), np.array(betas[run][: sizes[run] - 1]), bases[run, : sizes[run]])
            for run in range(count)]
