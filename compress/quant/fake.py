"""Fake quantization with straight-through gradients.

Forward: x ↦ (clamp(round(x / s) + z, q_min, q_max) − z) · s, the composition of ONNX
QuantizeLinear and DequantizeLinear (round half to even, saturation to [q_min, q_max]).
Backward: the straight-through estimator (Bengio et al. 2013) — round is the identity, clamp
passes the gradient only inside the range. With a learnable scale this is LSQ (Esser et al. 2020,
"Learned Step Size Quantization"): ∂x̂/∂s = round(x/s) − x/s inside the range and q_min or q_max
outside, with the gradient of s multiplied by g = 1/√(N·q_max) (N: values sharing the scale).
"""

from __future__ import annotations

import torch

from compress.quant.weights import weight_code_range


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """round(x) forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """x forward, gradient multiplied by ``factor`` backward (LSQ's gradient scale)."""
    return (x - x * factor).detach() + x * factor


def fake_quantize(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | int, q_min: int, q_max: int
) -> torch.Tensor:
    """(clamp(round(x / s) + z, q_min, q_max) − z) · s; ``scale`` broadcasts against ``x``."""
    codes = torch.clamp(round_ste(x / scale) + zero_point, q_min, q_max)
    return (codes - zero_point) * scale


def channel_shape(weight: torch.Tensor) -> tuple[int, ...]:
    """The shape that broadcasts a per-output-channel vector (axis 0) against ``weight``."""
    return (-1,) + (1,) * (weight.ndim - 1)


def lsq_gradient_scale(weight: torch.Tensor, bits: int) -> float:
    """g = 1/√(N·q_max) with N the number of weights per output channel and q_max the largest
    positive code (Esser et al. 2020, §2.2: Q_P)."""
    q_max = weight_code_range(bits)[1]
    return 1.0 / (weight[0].numel() * q_max) ** 0.5


def dynamic_grid(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero point) of ONNX DynamicQuantizeLinear for the whole tensor ``x`` (no gradient):
    s = (max(0, max x) − min(0, min x)) / 255, z = clamp(round(−min(0, min x) / s), 0, 255)."""
    x = x.detach()
    low, high = torch.clamp(x.min(), max=0), torch.clamp(x.max(), min=0)
    scale = (high - low) / 255
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale, torch.clamp(torch.round(-low / scale), 0, 255)


def dynamic_fake_quantize(x: torch.Tensor) -> torch.Tensor:
    """x quantized to uint8 on its own per-tensor grid (``dynamic_grid``) and dequantized, with
    the straight-through gradient: what DynamicQuantizeLinear feeds MatMulInteger."""
    scale, zero_point = dynamic_grid(x)
    return fake_quantize(x, scale, zero_point, 0, 255)
