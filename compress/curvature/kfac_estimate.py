"""The curvature stage's ``method="kfac"`` / ``"kflr"``: per-layer traces and the whole-model top
eigenvalues of the Kronecker-factored Gauss-Newton matrix (``compress.curvature.kfac``).

Every Linear / Conv2d layer with a trainable weight gets a row; other parameterised modules
(BatchNorm, LayerNorm, embeddings) have no Kronecker form here and are left out of the layers and
of the total. The top eigenvalues are those of the block-diagonal approximation: the largest
products λ_i(G)·λ_j(A) over all layers. The error bars: KFLR is a fixed matrix (probe part 0);
K-FAC's probe part is the spread of its label draws; over a random subset of the data the data
part follows ``compress.curvature.sampling`` from the per-batch traces. Neither covers the
Kronecker approximation itself, which the benchmark measures against the exact Hessian.
"""

from __future__ import annotations

import time

import torch

from compress.curvature.intervals import Z95
from compress.curvature.kfac import collect_factors
from compress.curvature.operator import CurvatureOperator
from compress.curvature.result import Curvature, LayerCurvature
from compress.curvature.sampling import data_stderr
from compress.curvature.trace import TraceSpec

KRONECKER_METHODS = ("kfac", "kflr")


def kronecker_curvature(operator: CurvatureOperator, loss: str, method: str, top_k: int, population: int,
                        spec: TraceSpec = TraceSpec(), start: float | None = None) -> Curvature:
    """``Curvature`` of the K-FAC (sampled labels) or KFLR (exact output factor) approximation of
    the Gauss-Newton matrix of the mean ``loss`` over ``operator``'s batches. ``spec``: the seed of
    the label draws, and ``rel_error`` / ``floor`` for ``converged`` (every layer's 95% half-width
    within ``rel_error`` of max(|trace|, floor·|total|)); the layers' errors add as independent."""
    from compress.progress import progress_bar

    start = time.perf_counter() if start is None else start
    with progress_bar(f"curvature ({method} factors)", len(operator.batches)) as advance:
        passes = collect_factors(operator.model, operator.batches, operator.total_samples, loss,
                                 exact=method == "kflr", seed=spec.seed, on_batch=advance)
    sizes = torch.tensor([len(b) for b in operator.batches], dtype=torch.float64)
    parts = passes.batch_traces * (sizes / sizes.sum()).unsqueeze(1)
    subset = operator.total_samples < population  # over all the data, there is no data part
    data = data_stderr(parts, sizes, population) if subset else torch.zeros(len(passes.factors), dtype=torch.float64)
    probe = passes.draw_variances.sqrt()
    params = operator.layout.layers
    layers = {
        name: LayerCurvature(f.trace, float(torch.hypot(p, d)), params[name][1] - params[name][0],
                             passes.backward_passes, float(p), float(d))
        for (name, f), p, d in zip(passes.factors.items(), probe, data)
    }
    top = torch.cat([f.top_eigenvalues(top_k) for f in passes.factors.values()]).sort(descending=True).values
    total_probe, total_data = float(probe.pow(2).sum().sqrt()), float(data.pow(2).sum().sqrt())
    total = sum(layer.trace for layer in layers.values())
    converged = all(Z95 * layer.trace_stderr <= spec.rel_error * max(abs(layer.trace), spec.floor * abs(total))
                    for layer in layers.values())
    covered = sum(layer.num_params for layer in layers.values())
    return Curvature(
        layers=layers, trace=total,
        trace_stderr=float(torch.hypot(torch.tensor(total_probe), torch.tensor(total_data))),
        top_eigenvalues=top[:top_k].tolist(), num_hvps=passes.backward_passes, seconds=time.perf_counter() - start,
        loss=loss, loss_value=operator.loss_value(),
        method=f"{method} (Kronecker-factored Gauss-Newton, {len(layers)} Linear/Conv2d layers, "
               f"{covered:,} of {operator.dim:,} parameters)",
        converged=converged, trace_stderr_probe=total_probe, trace_stderr_data=total_data,
        num_samples=operator.total_samples, population=population,
    )
