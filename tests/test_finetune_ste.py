"""A small straight-through fake-quantizer with a fixed pruning mask, for the fine-tuning tests
and benchmark (the real fake-quant modules live in compress.quant), and its own checks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from compress.prune.masks import magnitude_mask
from compress.quant.weights import fake_quantize_per_channel


@pytest.fixture
def single_thread() -> Iterator[None]:
    """One intra-op thread for tiny models: threads only add spin-waiting on a shared 2-core box."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
