"""Symmetric per-channel weight quantization (the form TensorRT's explicit quantization accepts:
zero point 0, one scale per output channel, axis 0), and the integer code range every weight grid of
the toolkit uses.

For b bits the codes are all b-bit two's-complement integers, [q_min, q_max] = [−2^(b−1), 2^(b−1) − 1]
(``code_range``: what ONNX QuantizeLinear saturates to, an INT4/INT8 DequantizeLinear input holds and
ORT's MatMulNBits stores as u = q + 2^(b−1)). The grid is symmetric in the sense of zero point 0; the
scale reaches both ends (``symmetric_scale``): per output channel c, s_c = max(max W_c / q_max,
−min W_c / (−q_min)), so the channel's largest positive weight lands on a code ≤ q_max, its most
negative one on a code ≥ q_min, and one of them exactly on its end. Q_b(W)_c = s_c · clamp(round(W_c
/ s_c), q_min, q_max), so the error of any weight inside the range is at most s_c / 2. (At 4 bits
the code −8 is the 16th level a 15-level grid −7…7 leaves unused, as llm-compressor's and GPTQ's
symmetric grids use it; at 2 bits it is 4 levels instead of 3.)
"""

from __future__ import annotations

import torch


def code_range(bits: int, signed: bool = True) -> tuple[int, int]:
    """[q_min, q_max]: [−2^(b−1), 2^(b−1) − 1] signed (every weight grid; ONNX QuantizeLinear's
    saturation), [0, 2^b − 1] unsigned (asymmetric grids with a zero point)."""
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def symmetric_scale(largest: torch.Tensor, smallest: torch.Tensor, bits: int) -> torch.Tensor:
    """s = max(largest / q_max, −smallest / (−q_min)) elementwise (``largest`` ≥ 0 ≥ ``smallest``:
    the extreme weights sharing the scale); 1 where both are 0. Computed as max(largest,
    (smallest / q_min)·q_max) / q_max (−q_min is a power of 2, so the division is exact): a weight
    dequantized from codes on s gives s back (``compress.pack.codes``)."""
    q_min, q_max = code_range(bits)
    scales = torch.maximum(largest, smallest / q_min * q_max) / q_max
    return torch.where(scales > 0, scales, torch.ones_like(scales))


def per_channel_scales(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """``symmetric_scale`` of each output channel c (axis 0); 1 for all-zero channels."""
    if not 2 <= bits <= 16:
        raise ValueError(f"weight bits must be in 2..16, got {bits}")
    rows = weight.detach().reshape(weight.shape[0], -1)
    return symmetric_scale(rows.amax(dim=1).clamp(min=0), rows.amin(dim=1).clamp(max=0), bits)


def quantize_per_channel(weight: torch.Tensor, scales: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes round(W / s) clamped to [q_min, q_max], as the exporter writes them."""
    shape = (-1,) + (1,) * (weight.ndim - 1)
    return torch.clamp(torch.round(weight / scales.reshape(shape)), *code_range(bits))


def fake_quantize_per_channel(weight: torch.Tensor, bits: int | None) -> torch.Tensor:
    """Q_b(W): quantize and dequantize; ``bits=None`` means keep float."""
    if bits is None:
        return weight
    scales = per_channel_scales(weight, bits)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    return quantize_per_channel(weight, scales, bits) * scales.reshape(shape)
