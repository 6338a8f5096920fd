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
"""

from __future__ import annotations

from typing import Callable

import torch

from compress.curvature.distributed import all_reduce_sum
from compress.curvature.losses import output_factor
from compress.curvature.operator import CurvatureOperator, _math_attention
from compress.curvature.trace import QuadraticForms, TraceSpec, LayerTraces, rademacher


def estimate_gauss_newton_traces(
    operator: CurvatureOperator,
    loss: str,
    spec: TraceSpec,
    forms: QuadraticForms,
    progress: Callable[[int], None] = lambda n: None,
    out_of_time: Callable[[], bool] = lambda: False,
) -> LayerTraces:
    """tr(G_ii) for every layer i from output-space probes, until the probe part of every layer's
    95% error meets ``spec.rel_error`` (or the product / time budget is spent)."""
    generator = torch.Generator().manual_seed(spec.seed)
    factor = output_factor(loss)
    outputs: dict[int, torch.Tensor] = {}
    leaves = list(operator._leaves.values())
    used = 0
    while True:
        for _ in range(spec.probes_per_round):
            if len(forms.samples) >= 2 and (used >= spec.max_products or out_of_time()):
                break
            sample = torch.zeros_like(forms.exact)
            with _math_attention(), torch.enable_grad():
                for index, batch in enumerate(operator.batches):
                    output = outputs.get(index)
                    if output is None:
                        output = operator._forward(operator._leaves, batch)
                        if operator.reuse_graphs:
                            outputs[index] = output
                    probe = rademacher(output.numel(), generator, output.dtype).view_as(output)
                    direction = factor(output, probe) / operator.total_samples**0.5
                    pulled = torch.autograd.grad(output, leaves, direction, retain_graph=operator.reuse_graphs,
                                                 allow_unused=True)
                    sample[operator.batch_ids[index]] = _block_squares(operator, pulled)
            forms.samples.append(all_reduce_sum(sample))
            operator.num_products += 1
            used += 1
            progress(1)
        traces, probes_done = forms.summary(spec)
        if probes_done or used >= spec.max_products or out_of_time():
            return traces


def _block_squares(operator: CurvatureOperator, pulled: tuple) -> torch.Tensor:
    """‖(Jᵀu)_i‖² for every layer i."""
    flat = torch.cat([(torch.zeros(p.numel(), dtype=p.dtype) if g is None else g.reshape(-1))
                      for g, p in zip(pulled, operator._leaves.values())])
    return operator.layout.block_dots(flat, flat)
