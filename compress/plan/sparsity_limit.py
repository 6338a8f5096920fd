"""Pruning limits from "How Sparse Can We Prune A Deep Network: A Fundamental Limit Perspective"
(Zhang, Zhang, Sun & Liu, arXiv 2306.05857).

Near trained weights w the ε-sublevel set of the loss is the ellipsoid with semi-axes
r_i = √(2ε / |λ_i|). Pruning the fraction p of weights by magnitude removes a vector of ℓ2 norm
R(p). The normalised squared Gaussian width of the ellipsoid seen at that distance is

    g(R) = (1/D) Σ_i 2ε / (2ε + |λ_i| R²),

and the pruning limit is the fixed point p* = g(R(p*)) (the paper quotes the kept fraction
1 − p*). With only the trace known, Jensen's inequality (1/(2ε + x) is convex) gives
g(R) ≥ 2εD / (2εD + Tr(H) R²), i.e. the trace-only kept-fraction bound
kept ≤ R² Tr(H) / (R² Tr(H) + 2εD).
"""

from __future__ import annotations

import numpy as np


def removed_norm(weights: np.ndarray, fraction: float) -> float:
    """R(p): ℓ2 norm of the ⌊p·D⌋ smallest-magnitude weights (those magnitude pruning removes)."""
    return removed_norms(weights)(fraction)


def removed_norms(weights: np.ndarray):
    """p ↦ R(p), sorting the weights once (a bisection asks for R at ~20 fractions)."""
    cumulative = np.concatenate([[0.0], np.cumsum(np.sort(np.abs(np.ravel(weights))) ** 2)])
    size = cumulative.size - 1

    def norm(fraction: float) -> float:
        return float(np.sqrt(cumulative[int(np.floor(fraction * size))]))

    return norm


def gaussian_width_fraction(eigenvalues: np.ndarray, weights_of_eigenvalues: np.ndarray, dim: int,
                            radius: float, epsilon: float) -> float:
    """g(R) for a spectral measure: eigenvalues with multiplicities (or SLQ weights × D)."""
    terms = 2 * epsilon / (2 * epsilon + np.abs(eigenvalues) * radius**2)
    return float(np.sum(weights_of_eigenvalues * terms) / dim)


def pruning_limit(weights: np.ndarray, eigenvalues: np.ndarray, multiplicities: np.ndarray,
                  epsilon: float, tolerance: float = 1e-6) -> float:
    """p*: the pruned fraction solving p = g(R(p)), by bisection (p − g(R(p)) increases in p)."""
    dim, radius = np.size(weights), removed_norms(weights)
    low, high = 0.0, 1.0
    while high - low > tolerance:
        middle = (low + high) / 2
        width = gaussian_width_fraction(eigenvalues, multiplicities, dim, radius(middle), epsilon)
        low, high = (middle, high) if middle < width else (low, middle)
    return (low + high) / 2


def trace_pruning_limit(weights: np.ndarray, trace: float, epsilon: float, tolerance: float = 1e-6) -> float:
    """The same fixed point with g replaced by its Jensen lower bound 2εD / (2εD + Tr(H)·R²):
    a per-layer limit from the layer's Hessian trace alone (every λ_i replaced by Tr/D)."""
    dim = np.size(weights)
    return pruning_limit(weights, np.array([trace / dim]), np.array([float(dim)]), epsilon, tolerance)
