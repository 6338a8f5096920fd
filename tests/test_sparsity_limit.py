"""The Zhang et al. pruning limit: closed forms, the fixed point, and the Jensen bound."""

import numpy as np
import pytest

from compress.plan.sparsity_limit import (
    gaussian_width_fraction,
    pruning_limit,
    removed_norm,
    trace_pruning_limit,
)


def test_removed_norm_takes_the_smallest_magnitudes() -> None:
    weights = np.array([3.0, -1.0, 0.5, -2.0])
    assert removed_norm(weights, 0.5) == pytest.approx(np.hypot(0.5, 1.0))
    assert removed_norm(weights, 0.0) == 0.0 and removed_norm(weights, 1.0) == pytest.approx(np.sqrt(14.25))


def test_fixed_point_matches_a_closed_form() -> None:
    # all |λ| = λ and weights whose removed norm is known: R(p)² = p·D·a² for equal magnitudes a,
    # so p = 2ε / (2ε + λ p D a²)  =>  λ D a² p² + 2ε p − 2ε = 0.
    dim, magnitude, lam, epsilon = 10_000, 0.05, 2.0, 0.01
    weights = np.full(dim, magnitude)
    a = lam * dim * magnitude**2
    expected = (-2 * epsilon + np.sqrt(4 * epsilon**2 + 8 * epsilon * a)) / (2 * a)
    limit = pruning_limit(weights, np.array([lam]), np.array([float(dim)]), epsilon)
    assert limit == pytest.approx(expected, abs=2e-4)


def test_the_fixed_point_is_a_fixed_point() -> None:
    rng = np.random.default_rng(0)
    weights = rng.normal(size=2000)
    eigenvalues = np.concatenate([rng.exponential(5.0, 20), np.zeros(1980)])
    multiplicities = np.ones(2000)
    limit = pruning_limit(weights, eigenvalues, multiplicities, epsilon=0.05)
    width = gaussian_width_fraction(eigenvalues, multiplicities, 2000, removed_norm(weights, limit), 0.05)
    assert limit == pytest.approx(width, abs=1e-3)


def test_trace_only_limit_is_the_jensen_bound() -> None:
    """Replacing the spectrum by its mean lowers g, so the trace limit never exceeds the spectral one."""
    rng = np.random.default_rng(1)
    for _ in range(5):
        weights = rng.normal(size=1000)
        eigenvalues = rng.exponential(1.0, 1000) * (rng.random(1000) < 0.1)
        spectral = pruning_limit(weights, eigenvalues, np.ones(1000), epsilon=0.02)
        trace_only = trace_pruning_limit(weights, float(eigenvalues.sum()), epsilon=0.02)
        assert trace_only <= spectral + 1e-6
        # more curvature, less pruning
        assert trace_pruning_limit(weights, 10 * float(eigenvalues.sum()), 0.02) < trace_only
