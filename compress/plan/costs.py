"""What an option costs: storage bits of a layer's weight, effective bits, bit operations.

A weight tensor of n entries (after channel removal) and C kept output channels compressed to b
bits with a mask zeroing the fraction s stores n·(1 − s)·b bits of codes, plus a keep-mask of
1 bit per weight for unstructured and 2:4 sparsity (channel pruning removes whole rows and
columns, so needs none), plus one fp32 scale per output channel when quantized. Float weights
take 32 bits each.
"""

from __future__ import annotations

from compress.vocab.options import LayerOption

FLOAT_BITS = 32
SCALE_BITS = 32


def storage_bits(num_weights: int, out_channels: int, option: LayerOption) -> float:
    """Bits of a stored weight tensor of ``num_weights`` entries (already narrowed by any channel
    removal) and ``out_channels`` rows."""
    bits = FLOAT_BITS if option.bits is None else option.bits
    sparsity = option.mask_sparsity()
    codes = num_weights * (1 - sparsity) * bits
    mask = num_weights if sparsity > 0 else 0
    scales = 0 if option.bits is None else out_channels * SCALE_BITS
    return codes + mask + scales


def effective_bits(option: LayerOption, kept_fraction: float = 1.0) -> float:
    """Bits per original weight, codes and mask only: what ``avg_bits`` budgets count;
    ``kept_fraction`` is the share of the weight left after channel removal."""
    bits = FLOAT_BITS if option.bits is None else option.bits
    sparsity = option.mask_sparsity()
    mask = 1 if sparsity > 0 else 0
    return kept_fraction * ((1 - sparsity) * bits + mask)


def bops(macs_per_sample: float, option: LayerOption, kept_fraction: float = 1.0) -> float:
    """Bit operations per sample, MACs · b_w · b_a (HAWQ-V3, Yao et al. 2021), float = 32 bits.
    Channel removal removes MACs (``kept_fraction`` of the weight is left); unstructured and 2:4
    zeros do not (no backend here runs sparse kernels for them, DESIGN §6), so they count dense."""
    weight_bits = FLOAT_BITS if option.bits is None else option.bits
    act_bits = FLOAT_BITS if option.act_bits is None else option.act_bits
    return macs_per_sample * kept_fraction * weight_bits * act_bits
