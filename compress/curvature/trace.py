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

Stopping rule: every layer's 95% probe half-width 1.96·s_i/√m is within ``rel_error`` of
max(|tr_i|, ``floor`` · |tr|), or ``max_products`` is spent. More probes cannot shrink the data
part of the error (a subset standing for the whole data); ``converged`` asks the total to meet
the target.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from compress.curvature.distributed import agreed, all_reduce_sum
from compress.curvature.intervals import Z95, student_scale
from compress.curvature.lanczos import LanczosResult, lanczos
from compress.curvature.params import ParamLayout



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
    """Per-layer traces (layout order) with the two parts of their standard errors: the probe
    part (finite probes) and the data part (a subset standing for the whole data, see
    ``compress.curvature.sampling``); the reported error is their root sum of squares."""

    traces: torch.Tensor  # float64, per layer (layout order)
    probe_stderrs: torch.Tensor
    data_stderrs: torch.Tensor
    num_probes: int  # residual probes (every layer shares them)
    lanczos: LanczosResult | None
    converged: bool  # every layer's total error within the requested one
    total_probe_stderr: float  # from the per-probe sums over layers (layers share probes, so correlate)
    total_data_stderr: float

    @property
    def stderrs(self) -> torch.Tensor:
        return (self.probe_stderrs**2 + self.data_stderrs**2).sqrt()

    @property
    def total(self) -> float:
        return float(self.traces.sum())

    @property
    def total_stderr(self) -> float:
        return (self.total_probe_stderr**2 + self.total_data_stderr**2) ** 0.5


class QuadraticForms:
    """Per-batch, per-layer quadratic forms: an exact part (B x L) plus one B x L sample per
    probe; each entry is batch b's weighted share of layer i's figure."""

    def __init__(self, batch_sizes: torch.Tensor, num_layers: int, population: int):
        self.batch_sizes = batch_sizes
        self.population = population
        self.exact = torch.zeros(len(batch_sizes), num_layers, dtype=torch.float64)
        self.samples: list[torch.Tensor] = []

    def summary(self, spec: TraceSpec, lanczos: LanczosResult | None = None) -> tuple[LayerTraces, bool]:
        """(the traces with both error parts, whether the probe part alone meets the target)."""
        from compress.curvature.sampling import data_stderr

        stacked = torch.stack(self.samples)  # probes x B x L
        per_probe = stacked.sum(dim=1)
        traces = self.exact.sum(dim=0) + per_probe.mean(dim=0)
        scale = student_scale(len(self.samples)) / len(self.samples) ** 0.5
        probe = per_probe.std(dim=0) * scale
        batch_parts = self.exact + stacked.mean(dim=0)
        data = data_stderr(batch_parts, self.batch_sizes, self.population)
        total_data = float(data_stderr(batch_parts.sum(dim=1, keepdim=True), self.batch_sizes, self.population)[0])
        total_probe = float(per_probe.sum(dim=1).std() * scale)
        enough = len(self.samples) >= spec.min_probes
        result = LayerTraces(traces, probe, data, len(self.samples), lanczos,
                             enough and _within(traces, (probe**2 + data**2).sqrt(), spec), total_probe, total_data)
        return result, enough and _within(traces, probe, spec)


def rademacher(dim: int, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    return (torch.randint(0, 2, (dim,), generator=generator) * 2 - 1).to(dtype)


def estimate_layer_traces(
    matvec: Callable[..., torch.Tensor],
    layout: ParamLayout,
    dtype: torch.dtype,
    spec: TraceSpec,
    forms: QuadraticForms,
    progress: Callable[[int], None] = lambda n: None,
    out_of_time: Callable[[], bool] = lambda: False,
) -> LayerTraces:
    """Deflated Hutchinson (module docstring). ``matvec(v, on_batch)`` is the operator's product,
    calling ``on_batch(b, (n_b/N) H_b v)`` per batch; ``forms`` collects per-batch figures."""
    generator = torch.Generator().manual_seed(spec.seed)
    basis, result = torch.empty(0, layout.dim, dtype=dtype), None

    def product_and_forms(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Hv, per-batch per-layer ⟨v, (I − QQᵀ) H_b v⟩_i)."""
        batch_forms = torch.zeros_like(forms.exact)

        def on_batch(index: int, share: torch.Tensor) -> None:
            batch_forms[index] = layout.block_dots(v, share - basis.T @ (basis @ share))

        product = matvec(v, on_batch)
        return product, all_reduce_sum(batch_forms)

    if spec.deflation_steps > 0:
        def lanczos_product(q: torch.Tensor) -> torch.Tensor:
            product, batch_forms = product_and_forms(q)
            forms.exact.add_(batch_forms)
            progress(1)
            return product

        start = torch.randn(layout.dim, generator=generator, dtype=torch.float64).to(dtype)
        result = lanczos(lanczos_product, start, spec.deflation_steps, out_of_time=out_of_time)
        basis = result.basis
    used = basis.shape[0]
    while True:
        for _ in range(spec.probes_per_round):
            if len(forms.samples) >= 2 and (used >= spec.max_products or out_of_time()):
                break  # at least two probes, so every error bar is finite
            forms.samples.append(product_and_forms(rademacher(layout.dim, generator, dtype))[1])
            used += 1
            progress(1)
        traces, probes_done = forms.summary(spec, result)
        if probes_done or used >= spec.max_products or out_of_time():
            return traces


def _within(traces: torch.Tensor, stderrs: torch.Tensor, spec: TraceSpec) -> bool:
    """Every layer's 95% half-width within ``rel_error`` of max(|trace|, floor · |total|)."""
    scale = torch.clamp(traces.abs(), min=spec.floor * abs(float(traces.sum())))
    return bool((Z95 * stderrs <= spec.rel_error * scale).all())
