"""Predicted loss increase of each per-layer option (bits b, sparsity s, pattern).

Second-order model around trained weights (gradient ≈ 0), with the layer's Hessian block
replaced by its mean eigenvalue Tr(H_i)/n_i (HAWQ-V2, Dong et al. 2020; HAWQ-V3, Yao et al.
2021), extended to pruning masks M_s:

    Ω_i(b, s) = ½ · (Tr(H_i) / n_i) · ‖Q_b(W_i ⊙ M_s) − W_i‖²

HAWQ's Ω omits the ½; with it, Ω predicts the loss change itself. The allocation is the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compress.prune.masks import pruning_mask
from compress.quant.weights import fake_quantize_per_channel


@dataclass(frozen=True)
class LayerOption:
    """One way to compress a layer: ``bits=None`` keeps the weight float; ``sparsity`` is the
    pruned fraction (0.5 for 2:4); ``act_bits`` quantizes the layer's input (None keeps it float)."""

    bits: int | None
    sparsity: float = 0.0
    pattern: str = "unstructured"
    act_bits: int | None = None

    def label(self) -> str:
        bits = "fp32" if self.bits is None else f"w{self.bits}"
        if self.act_bits is not None:
            bits += f"a{self.act_bits}"
        if self.pattern == "2:4":
            return f"{bits}+2:4"
        prefix = {"unstructured": "s", "channel": "ch"}[self.pattern]
        return bits if self.sparsity == 0 else f"{bits}+{prefix}{self.sparsity:g}"


def compressed_weight(weight: torch.Tensor, option: LayerOption) -> torch.Tensor:
    """Q_b(W ⊙ M): prune first, then quantize what is kept (zeros stay exactly zero)."""
    if option.sparsity > 0 or option.pattern == "2:4":
        weight = weight * pruning_mask(weight, option.sparsity, option.pattern)
    return fake_quantize_per_channel(weight, option.bits)


def sensitivity(weight: torch.Tensor, trace: float, num_params: int, option: LayerOption) -> float:
    """Ω_i for one option, in units of the loss."""
    perturbation = compressed_weight(weight.detach(), option) - weight.detach()
    return 0.5 * trace / num_params * float(perturbation.double().pow(2).sum())
