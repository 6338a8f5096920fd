"""Checks of the small straight-through fake-quantizer the fine-tuning tests and benchmark use
(``tests/helpers/ste.py``)."""

from __future__ import annotations

import torch
from torch import nn

from compress.prune.masks import magnitude_mask
from compress.quant.weights import fake_quantize_per_channel
from tests.helpers.ste import quantize_and_prune_


def test_forward_is_the_fake_quantized_masked_weight_and_gradient_passes_the_mask() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(16, 4)
    original = layer.weight.detach().clone()
    quantize_and_prune_(layer, bits=3, sparsity=0.5)
    mask = magnitude_mask(original, 0.5)
    assert torch.equal(layer.weight, fake_quantize_per_channel(original * mask, 3))
    assert int(mask.sum()) == 32
    assert all(len(torch.unique(row)) <= 2 ** 3 - 1 for row in layer.weight)  # symmetric 3-bit grid
    upstream = torch.randn(4, 16)
    (layer.weight * upstream).sum().backward()
    assert torch.equal(layer.parametrizations.weight.original.grad, upstream * mask)
