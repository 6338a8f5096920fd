"""What an option costs: storage bits of a layer's weight.

A layer of n weights and C output channels compressed to b bits with pruned fraction s stores
n·(1 − s)·b bits of codes, plus a keep-mask of 1 bit per weight for unstructured and 2:4
sparsity (channel pruning removes whole rows, so needs none), plus one fp32 scale per output
channel when quantized. Float weights take 32 bits each.
"""

from __future__ import annotations

from compress.plan.sensitivity import LayerOption

FLOAT_BITS = 32
SCALE_BITS = 32


def storage_bits(num_weights: int, out_channels: int, option: LayerOption) -> float:
    bits = FLOAT_BITS if option.bits is None else option.bits
    sparsity = 0.5 if option.pattern == "2:4" else option.sparsity
    codes = num_weights * (1 - sparsity) * bits
    mask = num_weights if option.pattern in ("unstructured", "2:4") and sparsity > 0 else 0
    kept_channels = out_channels * (1 - sparsity) if option.pattern == "channel" else out_channels
    scales = 0 if option.bits is None else kept_channels * SCALE_BITS
    return codes + mask + scales


def effective_bits(num_weights: int, option: LayerOption) -> float:
    """Bits per original weight, codes and mask only: what ``avg_bits`` budgets count."""
    bits = FLOAT_BITS if option.bits is None else option.bits
    sparsity = 0.5 if option.pattern == "2:4" else option.sparsity
    mask = 1 if option.pattern in ("unstructured", "2:4") and sparsity > 0 else 0
    return (1 - sparsity) * bits + mask


def bops(macs_per_sample: float, option: LayerOption) -> float:
    """Bit operations per sample, MACs · b_w · b_a (HAWQ-V3, Yao et al. 2021), float = 32 bits.
    Channel pruning removes MACs; unstructured and 2:4 zeros do not (no backend here runs
    sparse kernels for them, DESIGN §6), so they count dense."""
    weight_bits = FLOAT_BITS if option.bits is None else option.bits
    act_bits = FLOAT_BITS if option.act_bits is None else option.act_bits
    kept = 1 - option.sparsity if option.pattern == "channel" else 1.0
    return macs_per_sample * kept * weight_bits * act_bits
