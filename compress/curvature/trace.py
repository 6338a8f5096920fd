"""Per-layer Hessian traces from products with the whole matrix, with error bars.

For layer i with coordinate projector P_i and an orthonormal basis Q of a Krylov space of H
(from Lanczos, which approximates the dominant eigenvectors):

    tr(P_i H) = tr(Qᵀ H P_i Q) + tr(P_i (I − QQᵀ) H)
              = Σ_j ⟨q_j, H q_j⟩_i + E_g[⟨g, (I − QQᵀ) H g⟩_i],   g Rademacher.

The first term is exact from the Lanczos products; the second is Hutchinson's estimator
(Hutchinson 1989) on the deflated matrix, whose noise from the dominant directions (which couple
all layers) is gone: the block form of Hutch++ (Meyer, Musco, Musco & Woodruff 2021). One probe
g over all parameters updates every layer at once. With ``deflation_steps=0`` this is plain
Hutchinson with joint probes.

Stopping rule: every layer's 95% half-width 1.96·s_i/√m is within ``rel_error`` of
max(|tr_i|, ``floor`` · |tr|), or ``max_products`` is spent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from compress.curvature.distributed import agreed
from compress.curvature.lanczos import LanczosResult, lanczos
from compress.curvature.params import ParamLayout

Z95 = 1.959964


@dataclass(frozen=True)
class TraceSpec:
    rel_error: float = 0.05
    floor: float = 0.01
    deflation_steps: int = 40
    probes_per_round: int = 8
    min_probes: int = 8
    max_products: int = 400
    max_seconds: float | None = None  # wall-clock budget; the estimate stops with what it has
    seed: int = 0

    def deadline(self) -> Callable[[], bool]:
        """A clock started now that says when ``max_seconds`` have passed."""
        if self.max_seconds is None:
            return lambda: False
        end = time.monotonic() + self.max_seconds
        return lambda: agreed(time.monotonic() > end)


@dataclass(frozen=True)
class LayerTraces:
    traces: torch.Tensor  # float64, per layer (layout order)
    stderrs: torch.Tensor
    num_probes: int  # residual probes (every layer shares them)
    lanczos: LanczosResult | None
    converged: bool
    total_stderr: float  # from the per-probe sums over layers (layers share probes, so correlate)

    @property
    def total(self) -> float:
        return float(self.traces.sum())


def rademacher(dim: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    return (torch.randint(0, 2, (dim,), generator=generator) * 2 - 1).to(dtype)


def estimate_layer_traces(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    layout: ParamLayout,
    dtype: torch.dtype,
    spec: TraceSpec,
    progress: Callable[[int], None] = lambda n: None,
    out_of_time: Callable[[], bool] = lambda: False,
) -> LayerTraces:
    generator = torch.Generator().manual_seed(spec.seed)
    exact_part = torch.zeros(len(layout.layers), dtype=torch.float64)
    basis, result = torch.empty(0, layout.dim, dtype=dtype), None
    if spec.deflation_steps > 0:
        def record(q: torch.Tensor, hq: torch.Tensor) -> None:
            exact_part.add_(layout.block_dots(q, hq))
            progress(1)

        start = torch.randn(layout.dim, generator=generator, dtype=torch.float64).to(dtype)
        result = lanczos(matvec, start, spec.deflation_steps, on_product=record, out_of_time=out_of_time)
        basis = result.basis
    samples: list[torch.Tensor] = []
    used = basis.shape[0]
    while True:
        for _ in range(spec.probes_per_round):
            if len(samples) >= 2 and (used >= spec.max_products or out_of_time()):
                break  # at least two probes, so every error bar is finite
            g = rademacher(layout.dim, generator, dtype)
            hg = matvec(g)
            residual = hg - basis.T @ (basis @ hg)
            samples.append(layout.block_dots(g, residual))
            used += 1
            progress(1)
        traces, stderrs = _combine(exact_part, samples)
        converged = len(samples) >= spec.min_probes and _converged(traces, stderrs, spec)
        if converged or used >= spec.max_products or out_of_time():
            totals = [sample.sum().reshape(1) for sample in samples]
            total_stderr = float(_combine(exact_part.sum().reshape(1), totals)[1][0])
            return LayerTraces(traces, stderrs, len(samples), result, converged, total_stderr)


def _combine(exact_part: torch.Tensor, samples: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(exact part + mean of the probe samples, standard error of that mean); needs ≥ 2 samples."""
    stacked = torch.stack(samples)
    return exact_part + stacked.mean(dim=0), stacked.std(dim=0) / len(samples) ** 0.5


def _converged(traces: torch.Tensor, stderrs: torch.Tensor, spec: TraceSpec) -> bool:
    scale = torch.clamp(traces.abs(), min=spec.floor * abs(float(traces.sum())))
    return bool((Z95 * stderrs <= spec.rel_error * scale).all())
