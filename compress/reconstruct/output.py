"""Loss-aware row weights: how much each output channel of a layer matters to the loss.

For a layer with outputs y (channel r; per token or spatial position p) and loss L, the diagonal of
K-FAC's output factor G = E[g gᵀ], g = ∂ℓ/∂y, per channel: G_r = E_n[Σ_p (∂ℓ_n/∂y_{n,p,r})²]
(Martens & Grosse 2015; with the input factor H this makes the layer objective Σ_r G_r·Δw_r·A·Δw_rᵀ,
the Kronecker-factored quadratic of the loss, DESIGN §8). Gradients per example come from the summed
loss: ``ce`` against the targets (the empirical Fisher); ``distill`` — whose gradient vanishes at the
uncompressed model — from a Gaussian probe v of the output, g = Jᵀv, whose E[g gᵀ] is the Gauss-Newton
matrix JᵀJ of ½‖f − f₀‖². The weights are normalised to mean 1 per layer, so a loss-aware objective
keeps the plain one's scale and only moves emphasis between rows.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from compress.errors import InputError

PROBE_SEED = 0


def output_row_weights(model: nn.Module, batches: Sequence[tuple[tuple[torch.Tensor, ...], torch.Tensor | None]],
                       names: Sequence[str], loss: str) -> dict[str, torch.Tensor]:
    """ρ_r ∝ G_r for every layer in ``names`` (float64, mean 1) over ``batches`` of (inputs, targets)."""
    if loss not in ("ce", "distill"):
        raise InputError(f"loss {loss!r} is not allowed for loss-aware reconstruction (allowed: ce, distill)")
    sums = {name: None for name in names}
    generator = torch.Generator().manual_seed(PROBE_SEED)
    handles = [model.get_submodule(n).register_forward_hook(_capture(n, sums)) for n in names]
    try:
        for inputs, targets in batches:
            model.zero_grad(set_to_none=True)
            output = model(*inputs)
            if loss == "ce":
                if targets is None:
                    raise InputError("loss ce needs targets for loss-aware reconstruction; use loss distill")
                objective = nn.functional.cross_entropy(output, targets, reduction="sum")
            else:
                probe = torch.randn(output.shape, generator=generator, dtype=output.dtype)
                objective = (output * probe).sum()
            objective.backward()
    finally:
        for handle in handles:
            handle.remove()
        model.zero_grad(set_to_none=True)
    return {name: _normalised(total, model.get_submodule(name)) for name, total in sums.items()}


def _normalised(total: torch.Tensor | None, module: nn.Module) -> torch.Tensor:
    """G / mean(G); all ones when no gradient reached the layer (nothing to tell the rows apart)."""
    if total is None or not total.mean() > 0:
        return torch.ones(module.weight.shape[0], dtype=torch.float64)
    return (total / total.mean()).double()


def _capture(name: str, sums: dict):
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if output.requires_grad:
            output.register_hook(lambda grad: _add(sums, name, grad))

    return hook


def _add(sums: dict, name: str, grad: torch.Tensor) -> None:
    per_channel = grad.detach().pow(2).transpose(0, 1).reshape(grad.shape[1], -1).sum(dim=1) if grad.ndim == 4 \
        else grad.detach().pow(2).reshape(-1, grad.shape[-1]).sum(dim=0)
    sums[name] = per_channel if sums[name] is None else sums[name] + per_channel
