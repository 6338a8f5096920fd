"""Pictures of a curvature result: the Hessian's spectral density and per-layer traces."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compress.atomic import atomic_path
from compress.curvature.result import Curvature
from compress.curvature.spectrum import SpectralDensity
from compress.curvature.trace import Z95


def plot_curvature(curvature: Curvature, path: Path, title: str) -> None:
    """Two panels: smoothed SLQ density (log scale) and per-layer traces with 95% error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (density_axis, trace_axis) = plt.subplots(1, 2, figsize=(13, 4.8))
    _density(density_axis, curvature)
    _traces(trace_axis, curvature)
    figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(path) as partial:  # a kill mid-write leaves no truncated picture
        figure.savefig(partial, dpi=120)
    plt.close(figure)


def _density(axis, curvature: Curvature) -> None:
    density = SpectralDensity(np.array(curvature.density_nodes), np.array(curvature.density_weights))
    low, high = density.nodes.min(), density.nodes.max()
    span = max(high - low, 1e-12)
    grid = np.linspace(low - 0.05 * span, high + 0.05 * span, 800)
    values = density.smoothed(grid, sigma=0.01 * span)
    axis.semilogy(grid, np.maximum(values, 1e-8))
    axis.set_xlabel("eigenvalue λ")
    axis.set_ylabel("density (Gaussian-smoothed SLQ)")
    axis.set_title(f"spectrum: degeneracy {curvature.degeneracy_ratio:.2f}, "
                   f"negative mass {curvature.negative_mass:.3f}")


def _traces(axis, curvature: Curvature) -> None:
    names = list(curvature.layers)
    traces = [curvature.layers[n].trace for n in names]
    errors = [Z95 * curvature.layers[n].trace_stderr for n in names]
    axis.barh(range(len(names)), traces, xerr=errors, color="tab:blue", ecolor="black", capsize=2)
    axis.set_yticks(range(len(names)), names, fontsize=7 if len(names) > 20 else 9)
    axis.invert_yaxis()
    axis.set_xlabel("trace of the layer's Hessian block (±95%)")
    axis.set_title("per-layer Hessian trace")
