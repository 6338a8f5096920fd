"""Per-layer and whole-model pruning limits for a plan (``sparsity_limit.py`` holds the math).

The loss tolerance ε is the standard deviation of mini-batch losses at the trained weights, as
in Zhang et al. (arXiv 2306.05857): a loss increase below it is indistinguishable from batch noise.

- Per layer, only the layer's trace is known, so the limit is the trace-only fixed point
  (every eigenvalue of the block replaced by Tr(H_i)/D_i): the pruned fraction p_i* at which
  magnitude pruning of that layer alone leaves the ε-sublevel set.
- Whole model: the global magnitude-pruning fixed point with the SLQ spectral density of the
  full Hessian (|λ| for negative nodes), when the curvature carries one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from compress.curvature.result import Curvature
from compress.data.source import DataSource
from compress.plan.sensitivity import safe_trace
from compress.plan.sparsity_limit import pruning_limit, trace_pruning_limit


def loss_tolerance(model: nn.Module, data: DataSource, loss: str, batch_size: int) -> float:
    """ε: the standard deviation of the mini-batch losses over the data (≥ 2 batches needed)."""
    from compress.curvature.losses import loss_function
    from compress.curvature.prepare import reference_outputs

    function = loss_function(loss)
    losses = []
    with torch.no_grad():
        for batch in data.batches(batch_size):
            losses.append(float(function(model(*batch.inputs), reference_outputs(model, batch, loss))))
    if len(losses) < 2:
        raise ValueError("the loss tolerance needs at least two batches; lower --batch-size")
    return float(np.std(losses, ddof=1))


def layer_limits(model: nn.Module, curvature: Curvature, names: list[str], epsilon: float) -> dict[str, float]:
    """p_i* for every named layer's weight, from its Hessian trace as the planner prices it
    (``safe_trace``: noise can only lower a limit)."""
    limits = {}
    for name in names:
        weight = model.get_submodule(name).weight.detach().double().numpy()
        info = curvature.layers[name]
        trace = safe_trace(info.trace, info.trace_stderr) * weight.size / info.num_params  # the weight's share
        limits[name] = trace_pruning_limit(weight, trace, epsilon)
    return limits


def model_limit(model: nn.Module, curvature: Curvature, epsilon: float) -> float | None:
    """Global p* from the spectral density over all parameters; None without a density."""
    if not curvature.density_nodes:
        return None
    weights = np.concatenate([p.detach().double().flatten().numpy() for p in model.parameters()])
    nodes = np.abs(np.asarray(curvature.density_nodes))
    multiplicities = np.asarray(curvature.density_weights) * weights.size
    return pruning_limit(weights, nodes, multiplicities, epsilon)
