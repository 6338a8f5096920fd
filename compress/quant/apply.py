"""Weight-only post-training compression: replace each named layer's weight by Q_b(W ⊙ M)."""

from __future__ import annotations

import torch
from torch import nn

from compress.plan.sensitivity import compressed_weight
from compress.vocab.options import LayerOption


def compress_weights_(model: nn.Module, options: dict[str, LayerOption]) -> nn.Module:
    """In place: every layer named in ``options`` gets its compressed weight (fake-quantized)."""
    with torch.no_grad():
        for name, option in options.items():
            module = model.get_submodule(name)
            module.weight.copy_(compressed_weight(module.weight, option))
    return model
