"""A small straight-through fake-quantizer with a fixed pruning mask, for the fine-tuning tests and
benchmark (the real fake-quant modules live in compress.quant); checked in tests/test_finetune_ste.py."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from compress.prune.masks import magnitude_mask
from compress.quant.weights import fake_quantize_per_channel


class FakeQuantSTE(nn.Module):
    """Parametrization W ↦ Q_b(M ⊙ W) (symmetric per-channel), with the straight-through
    estimator ∂Q/∂W = M (Bengio, Léonard & Courville 2013)."""

    def __init__(self, bits: int, mask: torch.Tensor):
        super().__init__()
        self.bits = bits
        self.register_buffer("mask", mask.to(torch.get_default_dtype()))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        masked = weight * self.mask.to(weight.dtype)
        return masked + (fake_quantize_per_channel(masked, self.bits) - masked).detach()


def quantize_and_prune_(model: nn.Module, bits: int, sparsity: float) -> nn.Module:
    """Every Conv/Linear weight fake-quantized to ``bits`` with a fixed magnitude mask."""
    for module in list(model.modules()):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            mask = magnitude_mask(module.weight, sparsity)
            parametrize.register_parametrization(module, "weight", FakeQuantSTE(bits, mask))
    return model
