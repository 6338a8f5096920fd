"""Spectral density by stochastic Lanczos quadrature (Ghorbani, Krishnan & Xiao 2019; Lin,
Saad & Yang 2016).

For unit v uniform on the sphere, E[vᵀ f(H) v] = tr f(H) / D. Lanczos from v gives nodes θ_k
(Ritz values) and weights τ_k² (squared first components of T's eigenvectors) with
vᵀ f(H) v ≈ Σ_k τ_k² f(θ_k), exact for polynomials of degree < 2m. Averaging over runs gives a
discrete spectral measure: a density after Gaussian smoothing, moments, and the shares of the
spectrum near zero (degeneracy, Sagun et al. 2017; Papyan 2019) and below zero (negative mass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compress.curvature.lanczos import LanczosResult


@dataclass(frozen=True)
class SpectralDensity:
    nodes: np.ndarray  # Ritz values of all runs
    weights: np.ndarray  # quadrature weights, summing to 1 over all runs

    @staticmethod
    def from_runs(runs: list[LanczosResult]) -> "SpectralDensity":
        nodes, weights = zip(*(run.ritz() for run in runs))
        return SpectralDensity(np.concatenate(nodes), np.concatenate(weights) / len(runs))

    def moment(self, power: int) -> float:
        """Estimate of tr(H^power) / D."""
        return float(np.sum(self.weights * self.nodes**power))

    def share(self, low: float, high: float) -> float:
        """Share of the spectrum in [low, high]."""
        return float(self.weights[(self.nodes >= low) & (self.nodes <= high)].sum())

    def degeneracy_ratio(self, relative_width: float = 1e-3) -> float:
        """Share of eigenvalues with |λ| ≤ relative_width · max |λ|."""
        width = relative_width * float(np.abs(self.nodes).max())
        return self.share(-width, width)

    def negative_mass(self, relative_width: float = 1e-3) -> float:
        """Share of eigenvalues below −relative_width · max |λ|."""
        return float(self.weights[self.nodes < -relative_width * float(np.abs(self.nodes).max())].sum())

    def smoothed(self, grid: np.ndarray, sigma: float) -> np.ndarray:
        """Σ_k w_k N(grid; θ_k, σ²): a density on ``grid``."""
        diffs = (grid[:, None] - self.nodes[None, :]) / sigma
        return (np.exp(-0.5 * diffs**2) @ self.weights) / (sigma * np.sqrt(2 * np.pi))
