"""Weight masks that persist through fine-tuning, as ``torch.nn.utils.parametrize`` parametrizations.

The layer's ``weight`` becomes W = W₀ ⊙ M, computed in every forward pass from the trained
parameter W₀ (``<layer>.parametrizations.weight.original``) and the 0/1 mask M (a buffer,
``<layer>.parametrizations.weight.0.mask``, saved in the state dict). The pruned entries of W₀ are
zeroed when the mask is applied and ∂L/∂W₀ = ∂L/∂W ⊙ M is zero there, so SGD (with momentum and
weight decay), Adam and AdamW leave them exactly zero: both W and W₀ stay pruned while training.
A masked model's state dict loads into a model masked with the same settings (same shapes);
``remove_masks_`` bakes W₀ ⊙ M into a plain ``weight`` so the checkpoint loads into the unpruned
architecture and exports without the parametrization.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from compress.errors import InputError


class WeightMask(nn.Module):
    """W ↦ W ⊙ M for a fixed 0/1 mask M (a buffer in the weight's dtype, so ``.double()`` and
    ``.to(device)`` move it with the weight)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def apply_mask_(module: nn.Module, mask: torch.Tensor) -> None:
    """Zero the masked-out weights of ``module`` and keep them zero (an earlier mask is baked in
    first, so the weights it zeroed stay zero only if ``mask`` also drops them)."""
    if parametrize.is_parametrized(module, "weight"):
        others = [type(p).__name__ for p in module.parametrizations.weight if not isinstance(p, WeightMask)]
        if others:
            raise InputError(f"cannot mask a weight already parametrized by {', '.join(others)}; prune before that")
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    mask = mask.to(module.weight)
    with torch.no_grad():
        module.weight.mul_(mask)
    parametrize.register_parametrization(module, "weight", WeightMask(mask))


def masked_layers(model: nn.Module) -> list[str]:
    """Names of the modules whose weight carries a ``WeightMask``."""
    return [name for name, module in model.named_modules()
            if parametrize.is_parametrized(module, "weight")
            and any(isinstance(p, WeightMask) for p in module.parametrizations.weight)]


def remove_masks_(model: nn.Module) -> nn.Module:
    """In place: every masked weight becomes a plain parameter holding W₀ ⊙ M (for export and
    checkpoints that load into the unpruned architecture)."""
    for name in masked_layers(model):
        parametrize.remove_parametrizations(model.get_submodule(name), "weight", leave_parametrized=True)
    return model
