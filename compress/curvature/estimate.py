"""The curvature stage: ``estimate_curvature(model, data, spec) -> Curvature``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from compress.curvature.batching import curvature_batch_size
from compress.curvature.gauss_newton import estimate_gauss_newton_traces
from compress.curvature.gram import gram_applies, gram_lanczos, spectral_density
from compress.curvature.kfac_estimate import KRONECKER_METHODS, kronecker_curvature
from compress.curvature.lanczos import LanczosResult, lanczos_runs
from compress.curvature.memory import probes_per_pass
from compress.curvature.operator import CurvatureOperator
from compress.curvature.prepare import prepare_operator
from compress.curvature.result import Curvature, LayerCurvature
from compress.curvature.sampling import sample_indices, subset_batch_size
from compress.curvature.spectrum import SpectralDensity
from compress.curvature.trace import LayerTraces, QuadraticForms, TraceSpec, estimate_layer_traces
from compress.data.source import DataSource
from compress.errors import InputError

MAX_EXACT_PARAMS = 5000


METHODS = ("auto", "hutchinson", "gauss-newton", "kfac", "kflr")


@dataclass(frozen=True)
class CurvatureSpec:
    loss: str = "auto"  # ce when the data has targets, else distill
    batch_size: int = 128  # at most; token data is read in smaller batches when padding dominates (batching.py)
    max_samples: int | None = None  # None: all the given data; else a seeded random subset
    method: str = "auto"  # gauss-newton for distill (its Hessian), else hutchinson; kfac/kflr: Kronecker-factored
    product: str = "reverse-over-reverse"  # with reuse_graphs, the cheapest product measured here
    reuse_graphs: bool = True
    trace: TraceSpec = field(default_factory=TraceSpec)
    top_k: int = 5
    slq_runs: int = 1  # including the deflation run; top eigenvalues come from the first run
    slq_steps: int = 30
    allow_nondeterministic: bool = False
    exact: bool = False
    memory_budget: float = 6e9  # bytes of resident memory that batched probes may fill
    probes_per_pass: int | None = 1  # output-space probes per backward pass (capped by memory_budget); None: most



def estimate_curvature(model: nn.Module, data: DataSource, spec: CurvatureSpec = CurvatureSpec()) -> Curvature:
    """Per-layer traces ± standard errors, top eigenvalues and spectral density of the loss
    Hessian (or Gauss-Newton matrix) at the model's weights, over all of ``data``.

    With ``max_samples`` below the data size the figures are computed on a seeded random subset
    and every error bar adds the data part (``compress.curvature.sampling``) to the probe part."""
    from compress.progress import progress_bar

    start = time.perf_counter()
    _check_spec(spec, len(data))
    loss = spec.loss if spec.loss != "auto" else ("ce" if data.has_targets else "distill")
    method = spec.method if spec.method != "auto" else ("gauss-newton" if loss == "distill" else "hutchinson")
    population, batch_size = len(data), spec.batch_size
    chosen = sample_indices(population, spec.max_samples, spec.trace.seed)
    if chosen is not None:
        data = data.subset(chosen, f"{data.name}[random {len(chosen)}]")
        batch_size = subset_batch_size(len(chosen), batch_size)
    batch_size = curvature_batch_size(data, batch_size)
    model = model.eval()
    operator = prepare_operator(model, data, loss, batch_size, spec.product, spec.allow_nondeterministic,
                                spec.reuse_graphs)
    if spec.exact:
        return _exact(operator, loss, spec.top_k, start)
    if method in KRONECKER_METHODS:
        return kronecker_curvature(operator, loss, method, spec.top_k, population, spec.trace, start)
    forms = QuadraticForms(operator.batch_sizes, len(operator.layout.layers), population)
    out_of_time = spec.trace.deadline()
    deflation = spec.trace.deflation_steps if method == "hutchinson" else 0
    budget = spec.trace.max_products + max(spec.slq_runs - (deflation > 0), 0) * spec.slq_steps
    with progress_bar(f"curvature ({method} probes, then Lanczos)", budget) as advance:
        if method == "hutchinson":
            traces = estimate_layer_traces(operator.matvec, operator.layout, operator.dtype, spec.trace, forms,
                                           advance, out_of_time)
        else:
            per_pass = lambda: probes_per_pass(operator.dim, spec.memory_budget,
                                               spec.probes_per_pass or spec.trace.probes_per_round)
            traces = estimate_gauss_newton_traces(operator, loss, spec.trace, forms, advance, out_of_time, per_pass)
        runs, share = _lanczos_runs(operator, spec, method == "gauss-newton" and gram_applies(operator, loss),
                                    traces, advance, out_of_time)
    _check_finite_products(traces, runs, data.name)
    density = spectral_density(runs, share) if runs else None
    top = np.sort(runs[0].ritz()[0])[::-1][: spec.top_k].tolist() if runs else []
    probes = traces.num_probes + (len(traces.lanczos.alphas) if traces.lanczos is not None else 0)
    layers = {
        name: LayerCurvature(float(t), float(s), stop - begin, probes, float(p), float(d))
        for (name, (begin, stop)), t, s, p, d in zip(operator.layout.layers.items(), traces.traces, traces.stderrs,
                                                   traces.probe_stderrs, traces.data_stderrs)
    }
    deflated = "lanczos-deflated " if traces.lanczos is not None else ""
    product = f" ({spec.product})" if method == "hutchinson" else " (output-space probes)"
    return Curvature(
        layers=layers, trace=traces.total, trace_stderr=traces.total_stderr,
        top_eigenvalues=top, num_hvps=operator.num_products, seconds=time.perf_counter() - start,
        loss=loss, loss_value=operator.loss_value(), method=f"{deflated}{method}{product}",
        converged=traces.converged, trace_stderr_probe=traces.total_probe_stderr,
        trace_stderr_data=traces.total_data_stderr, num_samples=len(data), population=population,
        density_nodes=density.nodes.tolist() if density else [],
        density_weights=density.weights.tolist() if density else [],
        degeneracy_ratio=density.degeneracy_ratio() if density else 0.0,
        negative_mass=density.negative_mass() if density else 0.0,
    )


def _check_finite_products(traces: LayerTraces, runs: list[LanczosResult], data_name: str) -> None:
    """Finite weights, inputs and outputs can still give Inf/NaN curvature: products of huge
    Jacobian entries overflow float32 (an input of 1e30 squares to Inf). One line, not a crash."""
    values = np.concatenate([np.asarray(traces.traces, dtype=float).ravel(),
                             *(np.concatenate([run.alphas, run.betas]) for run in runs)])
    if not np.isfinite(values).all():
        raise InputError(f"the curvature on data {data_name} overflows (Inf/NaN Hessian products) although the "
                         "model's outputs are finite: inputs or weights are too large; rescale them")


def _check_spec(spec: CurvatureSpec, num_samples: int) -> None:
    if num_samples < 1:
        raise InputError("the data is empty; give at least one sample")
    if spec.max_samples is not None and spec.max_samples < 1:
        raise InputError(f"max_samples must be at least 1 (or None for all the data), got {spec.max_samples}")
    if spec.max_samples == 1 < num_samples:
        raise InputError("max_samples=1 leaves no spread to measure the data part of the error from; "
                         "give at least 2, or leave it unset for all the data")
    if spec.batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {spec.batch_size}")
    if spec.probes_per_pass is not None and spec.probes_per_pass < 1:
        raise InputError(f"probes_per_pass must be at least 1 (or None: from memory_budget), got {spec.probes_per_pass}")
    if not spec.memory_budget > 0:
        raise InputError(f"memory_budget must be positive (bytes), got {spec.memory_budget}")
    if spec.method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {spec.method!r}")


def _lanczos_runs(operator: CurvatureOperator, spec: CurvatureSpec, gram: bool, traces: LayerTraces,
                  advance: Callable[[int], None],
                  out_of_time: Callable[[], bool]) -> tuple[list[LanczosResult], float]:
    """The deflation run (if any) plus fresh Lanczos runs up to ``slq_runs``, in lockstep (one
    batched product per step), on the output-space Gram matrix when ``gram``
    (``compress.curvature.gram``); and the share of the spectrum the runs stand for. Fresh runs
    drop their bases."""
    runs = [traces.lanczos] if traces.lanczos is not None else []
    fresh = spec.slq_runs - len(runs)
    if fresh <= 0 or out_of_time():
        return runs, 1.0
    if gram:
        new, share = gram_lanczos(operator, fresh, spec.slq_steps, spec.trace.seed + 1, advance, out_of_time)
        return [_without_basis(run) for run in new], share
    generator = torch.Generator().manual_seed(spec.trace.seed + 1)
    starts = torch.randn(fresh, operator.dim, generator=generator, dtype=torch.float64).to(operator.dtype)
    new = lanczos_runs(operator.matmat, starts, spec.slq_steps, lambda q, hq: advance(len(q)), out_of_time)
    return runs + [_without_basis(run) for run in new], 1.0


def _without_basis(run: LanczosResult) -> LanczosResult:
    """The run's tridiagonal matrix only: its basis (steps x dim) is what Lanczos costs in memory."""
    return LanczosResult(run.alphas, run.betas, torch.empty(0, 0))


def _exact(operator: CurvatureOperator, loss: str, top_k: int, start: float) -> Curvature:
    from compress.curvature.exact import dense_hessian

    if operator.dim > MAX_EXACT_PARAMS:
        raise InputError(f"exact=True forms the dense Hessian: {operator.dim:,} parameters is more than "
                        f"{MAX_EXACT_PARAMS:,}; use the estimators (exact=False)")
    hessian = dense_hessian(operator.model, operator.batches, operator.references, operator.loss,
                            operator.total_samples)
    eigenvalues = torch.linalg.eigvalsh(hessian).numpy()
    diagonal = hessian.diagonal()
    layers = {name: LayerCurvature(float(diagonal[b:e].sum()), 0.0, e - b, 0)
              for name, (b, e) in operator.layout.layers.items()}
    density = SpectralDensity(eigenvalues, np.full(len(eigenvalues), 1.0 / len(eigenvalues)))
    return Curvature(
        layers=layers, trace=float(diagonal.sum()), trace_stderr=0.0,
        top_eigenvalues=np.sort(eigenvalues)[::-1][:top_k].tolist(), num_hvps=0,
        seconds=time.perf_counter() - start, loss=loss, loss_value=operator.loss_value(), method="exact",
        converged=True,
        density_nodes=eigenvalues.tolist(), density_weights=density.weights.tolist(),
        degeneracy_ratio=density.degeneracy_ratio(), negative_mass=density.negative_mass(),
    )
