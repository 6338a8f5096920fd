"""Per-layer traces of the Gauss-Newton matrix from probes in output space.

For the mean loss over N samples, G = (1/N) Σ_n J_nᵀ H_n J_n with J_n the Jacobian of sample n's
output and H_n = S_n S_nᵀ its output Hessian (``compress.curvature.losses``). With independent
Rademacher r_n and u_n = S_n r_n / √N,

    E ‖(Σ_n J_nᵀ u_n)_i‖² = Σ_n tr(P_i J_nᵀ H_n J_n P_i) / N = tr(G_ii),

since cross-sample terms have mean zero. One backward pass of a batch's output along u gives
every layer's block at once, and a layer's sample involves its own block only: no cross-layer
noise, which dominates joint Hessian probes (DESIGN §7). This is the trace of the Monte-Carlo
GGN diagonal (BackPACK's DiagGGN-MC) with the exact output factor instead of sampled labels.
For self-distillation at the start point G is the Hessian exactly; for ReLU nets each layer's
Hessian block equals its GGN block; for smooth nets with cross-entropy they differ.

``probes_per_pass`` probes go through each batch's kept forward graph in one batched backward
pass (``CurvatureOperator.pull_back_params``).
"""

from __future__ import annotations

from typing import Callable

import torch

from compress.curvature.distributed import all_reduce_sum
from compress.curvature.losses import output_factor
from compress.curvature.operator import CurvatureOperator
from compress.curvature.trace import QuadraticForms, TraceSpec, LayerTraces, rademacher


def estimate_gauss_newton_traces(
    operator: CurvatureOperator,
    loss: str,
    spec: TraceSpec,
    forms: QuadraticForms,
    progress: Callable[[int], None] = lambda n: None,
    out_of_time: Callable[[], bool] = lambda: False,
    probes_per_pass: Callable[[], int] = lambda: 1,
) -> LayerTraces:
    """tr(G_ii) for every layer i from output-space probes, until the probe part of every layer's
    95% error meets ``spec.rel_error`` (or the product / time budget is spent). The first probe
    runs alone (it builds the kept forward graphs); ``probes_per_pass()``, asked then, sizes the
    later batched passes."""
    generator = torch.Generator().manual_seed(spec.seed)
    factor = output_factor(loss)
    used, per_pass = 0, None
    while True:
        done_in_round = 0
        while done_in_round < spec.probes_per_round:
            if len(forms.samples) >= 2 and (used >= spec.max_products or out_of_time()):
                break
            count = max(1, min(per_pass or 1, spec.probes_per_round - done_in_round, spec.max_products - used))
            forms.samples.extend(all_reduce_sum(_probe_samples(operator, factor, generator, count)).unbind())
            operator.num_products += count
            used += count
            done_in_round += count
            progress(count)
            per_pass = per_pass or probes_per_pass()
        traces, probes_done = forms.summary(spec)
        if probes_done or used >= spec.max_products or out_of_time():
            return traces


def _probe_samples(operator: CurvatureOperator, factor: Callable, generator: torch.Generator,
                   count: int) -> torch.Tensor:
    """``count`` probes' per-batch, per-layer ‖(Jᵀu)_i‖² (count x batches x layers), this rank's batches."""
    samples = torch.zeros(count, operator.num_batches, len(operator.layout.layers), dtype=torch.float64)
    for index in range(len(operator.batches)):
        output = operator.output(index)
        probes = rademacher(count * output.numel(), generator, output.dtype).view(count, *output.shape)
        directions = torch.stack([factor(output, probe) for probe in probes]) / operator.total_samples**0.5
        pulled = operator.pull_back_params(index, directions, output)
        samples[:, operator.batch_ids[index]] = operator.layout.block_squared_norms(pulled, count)
    return samples
