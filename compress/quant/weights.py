"""Symmetric per-channel weight quantization (the form TensorRT's explicit quantization accepts:
zero point 0, one scale per output channel, axis 0).

For b bits, q_max = 2^(b−1) − 1 and, per output channel c, s_c = max|W_c| / q_max;
Q_b(W)_c = s_c · clamp(round(W_c / s_c), −q_max, q_max). The grid is symmetric (−q_max … q_max),
so the error of any weight inside the range is at most s_c / 2.
"""

from __future__ import annotations

import torch


def per_channel_scales(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """s_c = max|W_c| / q_max for each output channel c (axis 0); 1 for all-zero channels."""
    if not 2 <= bits <= 16:
        raise ValueError(f"weight bits must be in 2..16, got {bits}")
    q_max = 2 ** (bits - 1) - 1
    largest = weight.detach().abs().reshape(weight.shape[0], -1).amax(dim=1)
    return torch.where(largest > 0, largest / q_max, torch.ones_like(largest))


def quantize_per_channel(weight: torch.Tensor, scales: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes round(W / s) clamped to [−q_max, q_max], as the exporter writes them."""
    q_max = 2 ** (bits - 1) - 1
    shape = (-1,) + (1,) * (weight.ndim - 1)
    return torch.clamp(torch.round(weight / scales.reshape(shape)), -q_max, q_max)


def fake_quantize_per_channel(weight: torch.Tensor, bits: int | None) -> torch.Tensor:
    """Q_b(W): quantize and dequantize; ``bits=None`` means keep float."""
    if bits is None:
        return weight
    scales = per_channel_scales(weight, bits)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    return quantize_per_channel(weight, scales, bits) * scales.reshape(shape)
