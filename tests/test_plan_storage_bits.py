"""The planner's stored size of a weight is what the checkpoint writes: for quantized codes with
zeros, the smaller of dense codes and keep-mask + non-zero codes (``compress.pack.codes``), within
the byte rounding of its two parts; float weights are stored dense, zeros included."""

from __future__ import annotations

import pytest
import torch

from compress.pack.codes import encode_codes
from compress.plan.costs import SCALE_BITS, effective_bits, storage_bits
from compress.vocab.options import LayerOption

ROWS, COLUMNS = 16, 256


def _codes(bits: int, sparsity: float) -> torch.Tensor:
    """Codes with exactly ``sparsity`` of them 0 and the rest non-zero in the symmetric range."""
    generator = torch.Generator().manual_seed(bits)
    q_max = 2 ** (bits - 1) - 1
    magnitudes = torch.randint(1, q_max + 1, (ROWS * COLUMNS,), generator=generator)
    signs = torch.where(torch.rand(ROWS * COLUMNS, generator=generator) < 0.5, -1, 1)
    codes = magnitudes * signs
    codes[torch.randperm(codes.numel(), generator=generator)[:round(sparsity * codes.numel())]] = 0
    return codes


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("sparsity", [0.05, 0.2, 0.5, 0.8])
def test_quantized_storage_is_the_checkpoints_encoding(bits: int, sparsity: float) -> None:
    option = LayerOption(bits, sparsity)
    planned = storage_bits(ROWS * COLUMNS, ROWS, option) - ROWS * SCALE_BITS
    written = encode_codes(_codes(bits, sparsity), bits).payload.numel() * 8
    assert abs(planned - written) <= 16, (planned, written)
    assert effective_bits(option) * ROWS * COLUMNS == pytest.approx(planned)


def test_float_weights_are_stored_dense() -> None:
    assert storage_bits(1000, 10, LayerOption(None, 0.5)) == storage_bits(1000, 10, LayerOption(None)) == 32_000
