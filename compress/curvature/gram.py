"""The Gauss-Newton matrix's spectrum through its output-space Gram matrix.

With J the Jacobian of all M model outputs of the data (stacked over samples) with respect to the
D weights, self-distillation has G = JᵀJ / N (output Hessian I per sample). The Gram matrix
K = JJᵀ / N (M x M) has the same nonzero eigenvalues with the same multiplicities (both are
AᵀA and AAᵀ for A = J/√N, via the singular value decomposition of A), and G has D − M more
zeros when M < D. So Lanczos on K gives G's top eigenvalues, and stochastic Lanczos quadrature
on K gives G's spectral measure as

    μ_G = (M/D) μ_K + (1 − M/D) δ₀.

A product Ku = J(Jᵀu)/N is one backward pass through the kept forward graphs (Jᵀu) and one
forward-mode pass (J times it, reusing the bilinear layers' primal outputs,
``compress.curvature.tangents``): the graphs the output-space trace probes already keep, and no
double-backward graphs. Lanczos vectors have M entries instead of D: on a sentence encoder
(256 sentences x 384 outputs vs 22.7M weights) the basis shrinks from gigabytes to megabytes.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from compress.curvature.distributed import rank_and_world
from compress.curvature.lanczos import LanczosResult, lanczos_runs
from compress.curvature.operator import CurvatureOperator
from compress.curvature.spectrum import SpectralDensity


def output_size(operator: CurvatureOperator) -> int:
    """M: the number of model outputs over the data (distill: the references are the outputs)."""
    return sum(reference.numel() for reference in operator.references)


def gram_applies(operator: CurvatureOperator, loss: str) -> bool:
    """The Gram route needs the distill loss (identity output Hessian), one process (the output
    vector is not sharded) and fewer outputs than weights."""
    return loss == "distill" and rank_and_world()[1] == 1 and output_size(operator) < operator.dim


def gram_matmat(operator: CurvatureOperator) -> Callable[[torch.Tensor], torch.Tensor]:
    """U (k x M) -> K Uᵀ row by row: Σ_b J_bᵀ u_b in one backward pass over all batches, then
    J_b of it per batch (tangents only after the first call), over N."""
    shapes = [reference.shape for reference in operator.references]

    def matmat(vectors: torch.Tensor) -> torch.Tensor:
        pieces = vectors.to(operator.dtype).split([shape.numel() for shape in shapes], dim=1)
        tangents = operator.pull_back_all([piece.view(len(vectors), *shape) for piece, shape in zip(pieces, shapes)])
        pushed = [operator.push_forward(index, tangents)[1].reshape(len(vectors), -1)
                  for index in range(len(operator.batches))]
        operator.num_products += len(vectors)
        return torch.cat(pushed, dim=1) / operator.total_samples

    return matmat


def gram_lanczos(operator: CurvatureOperator, runs: int, steps: int, seed: int,
                 on_products: Callable[[int], None] = lambda n: None,
                 out_of_time: Callable[[], bool] = lambda: False) -> tuple[list[LanczosResult], float]:
    """``runs`` Lanczos runs on K in lockstep (one batched product per step): the runs (their
    Ritz values are G's nonzero ones) and M/D, the share of G's spectrum they stand for."""
    size = output_size(operator)
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randn(runs, size, generator=generator, dtype=torch.float64).to(operator.dtype)
    results = lanczos_runs(gram_matmat(operator), starts, steps, lambda q, kq: on_products(len(q)), out_of_time)
    return results, size / operator.dim


def spectral_density(runs: list[LanczosResult], share: float = 1.0) -> SpectralDensity:
    """The density from Lanczos runs on a matrix standing for ``share`` of the spectrum (K: M/D),
    the rest at zero: μ_G = share · μ_K + (1 − share) δ₀ (module docstring)."""
    measured = SpectralDensity.from_runs(runs)
    if share >= 1.0:
        return measured
    return SpectralDensity(np.append(measured.nodes, 0.0), np.append(measured.weights * share, 1.0 - share))
