"""What an option costs: storage bits of a layer's weight, effective bits, bit operations.

A weight tensor of n entries (after channel removal) and C kept output channels compressed to b
bits with a mask zeroing the fraction s stores, per weight, the smaller of b bits (every code,
zeros included) and 1 + (1 − s)·b bits (a keep-mask and the non-zero codes): the rule the
checkpoint and the ONNX file follow (``compress.pack.codes.encode_codes``), so unstructured and
2:4 sparsity save only where the mask pays for itself (channel pruning removes whole rows and
columns, so needs none); plus one fp32 scale per output channel when quantized. Float weights
take 32 bits each, zeros included: no artifact stores a float weight as mask and values.
"""

from __future__ import annotations

from compress.vocab.options import LayerOption

FLOAT_BITS = 32
SCALE_BITS = 32


def code_bits(option: LayerOption) -> float:
    """Bits stored per remaining weight under ``option`` (module docstring)."""
    if option.bits is None:
        return FLOAT_BITS
    sparsity = option.mask_sparsity()
    return min(option.bits, 1 + (1 - sparsity) * option.bits) if sparsity > 0 else option.bits


def storage_bits(num_weights: int, out_channels: int, option: LayerOption) -> float:
    """Bits of a stored weight tensor of ``num_weights`` entries (already narrowed by any channel
    removal) and ``out_channels`` rows."""
    scales = 0 if option.bits is None else out_channels * SCALE_BITS
    return num_weights * code_bits(option) + scales


def effective_bits(option: LayerOption, kept_fraction: float = 1.0) -> float:
    """Bits per original weight, codes and mask only: what ``avg_bits`` budgets count;
    ``kept_fraction`` is the share of the weight left after channel removal."""
    return kept_fraction * code_bits(option)


def bops(macs_per_sample: float, option: LayerOption, kept_fraction: float = 1.0) -> float:
    """Bit operations per sample, MACs · b_w · b_a (HAWQ-V3, Yao et al. 2021), float = 32 bits.
    Channel removal removes MACs (``kept_fraction`` of the weight is left); unstructured and 2:4
    zeros do not (no backend here runs sparse kernels for them, DESIGN §6), so they count dense."""
    weight_bits = FLOAT_BITS if option.bits is None else option.bits
    act_bits = FLOAT_BITS if option.act_bits is None else option.act_bits
    return macs_per_sample * kept_fraction * weight_bits * act_bits
