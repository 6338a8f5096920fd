"""The curvature stage: ``estimate_curvature(model, data, spec) -> Curvature``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from compress.curvature.lanczos import lanczos
from compress.curvature.operator import CurvatureOperator
from compress.curvature.prepare import prepare_operator
from compress.curvature.result import Curvature, LayerCurvature
from compress.curvature.spectrum import SpectralDensity
from compress.curvature.trace import TraceSpec, estimate_layer_traces
from compress.data.source import DataSource
from compress.errors import InputError

MAX_EXACT_PARAMS = 5000


@dataclass(frozen=True)
class CurvatureSpec:
    loss: str = "auto"  # ce when the data has targets, else distill
    batch_size: int = 128
    product: str = "reverse-over-reverse"  # with reuse_graphs, the cheapest product measured here
    reuse_graphs: bool = True
    trace: TraceSpec = field(default_factory=TraceSpec)
    top_k: int = 5
    slq_runs: int = 2  # including the deflation run
    slq_steps: int = 30
    allow_nondeterministic: bool = False
    exact: bool = False


def estimate_curvature(model: nn.Module, data: DataSource, spec: CurvatureSpec = CurvatureSpec()) -> Curvature:
    """Per-layer traces ± standard errors, top eigenvalues and spectral density of the loss
    Hessian (or Gauss-Newton matrix) at the model's weights, over all of ``data``."""
    from compress.progress import progress_bar

    start = time.perf_counter()
    loss = spec.loss if spec.loss != "auto" else ("ce" if data.has_targets else "distill")
    model = model.eval()
    operator = prepare_operator(model, data, loss, spec.batch_size, spec.product, spec.allow_nondeterministic,
                                spec.reuse_graphs)
    if spec.exact:
        return _exact(operator, loss, spec.top_k, start)
    budget = spec.trace.max_products + (spec.slq_runs - 1) * spec.slq_steps
    out_of_time = spec.trace.deadline()
    with progress_bar("curvature (Hessian-vector products)", budget) as advance:
        traces = estimate_layer_traces(operator.matvec, operator.layout, operator.dtype, spec.trace, advance,
                                       out_of_time)
        runs = [traces.lanczos] if traces.lanczos is not None else []
        generator = torch.Generator().manual_seed(spec.trace.seed + 1)
        for _ in range(spec.slq_runs - len(runs)):
            if out_of_time():
                break
            start_vector = torch.randn(operator.dim, generator=generator, dtype=torch.float64).to(operator.dtype)
            runs.append(lanczos(operator.matvec, start_vector, spec.slq_steps,
                                on_product=lambda q, hq: advance(1), out_of_time=out_of_time))
    density = SpectralDensity.from_runs(runs) if runs else None
    top = np.sort(runs[0].ritz()[0])[::-1][: spec.top_k].tolist() if runs else []
    probes = traces.num_probes + (len(traces.lanczos.alphas) if traces.lanczos is not None else 0)
    layers = {
        name: LayerCurvature(float(t), float(s), stop - begin, probes)
        for (name, (begin, stop)), t, s in zip(operator.layout.layers.items(), traces.traces, traces.stderrs)
    }
    method = f"lanczos-deflated hutchinson ({spec.product})" if runs else f"hutchinson ({spec.product})"
    return Curvature(
        layers=layers, trace=traces.total, trace_stderr=traces.total_stderr,
        top_eigenvalues=top, num_hvps=operator.num_products, seconds=time.perf_counter() - start,
        loss=loss, loss_value=operator.loss_value(), method=method, converged=traces.converged,
        density_nodes=density.nodes.tolist() if density else [],
        density_weights=density.weights.tolist() if density else [],
        degeneracy_ratio=density.degeneracy_ratio() if density else 0.0,
        negative_mass=density.negative_mass() if density else 0.0,
    )


def _exact(operator: CurvatureOperator, loss: str, top_k: int, start: float) -> Curvature:
    from compress.curvature.exact import dense_hessian

    if operator.dim > MAX_EXACT_PARAMS:
        raise InputError(f"--exact forms the dense Hessian: {operator.dim:,} parameters is more than "
                        f"{MAX_EXACT_PARAMS:,}; drop --exact for the estimators")
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
