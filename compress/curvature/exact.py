"""Dense float64 Hessians of the mean loss, for tiny models: the reference for every estimator."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call

from compress.curvature.losses import LossFn
from compress.curvature.params import ParamLayout
from compress.data.source import Batch


def dense_hessian(model: nn.Module, batches: list[Batch], references: list[torch.Tensor], loss: LossFn,
                  total_samples: int) -> torch.Tensor:
    """∇²L(θ) in float64, D x D, for L the sample-weighted mean of the batch losses."""
    model64 = copy.deepcopy(model).double().eval()
    layout = ParamLayout.of(model64)
    named = dict(model64.named_parameters())
    constants = {n: p.detach() for n, p in named.items() if n not in layout.names}
    constants.update(dict(model64.named_buffers()))
    flat = layout.flatten({n: named[n].detach() for n in layout.names})

    def mean_loss(vector: torch.Tensor) -> torch.Tensor:
        params = {**layout.unflatten(vector), **constants}
        return sum(
            len(b) / total_samples * loss(functional_call(model64, params, _double(b.inputs)), _double(r))
            for b, r in zip(batches, references)
        )

    return torch.func.hessian(mean_loss)(flat)


def _double(value):
    if isinstance(value, tuple):
        return tuple(_double(v) for v in value)
    return value.double() if value.is_floating_point() else value


def layer_traces(hessian: torch.Tensor, layout: ParamLayout) -> dict[str, float]:
    """Trace of each layer's diagonal block."""
    diagonal = hessian.diagonal()
    return {name: float(diagonal[start:stop].sum()) for name, (start, stop) in layout.layers.items()}
