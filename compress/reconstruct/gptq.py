"""GPTQ's quantization grid (Frantar et al. 2022, arXiv 2210.17323): the scales are fixed before the
sweep, and each column is rounded to that grid when the sweep reaches it.

Scales are the ones the rest of the toolkit uses (one definition, ``compress.quant.blocks``):
symmetric (zero point 0, codes [q_min, q_max] = ``compress.quant.weights.weight_code_range``), s = α·(the block's symmetric
scale, ``compress.quant.weights.symmetric_scale``) with the MSE-optimal clip α per block of ``weight_block`` input
features, or per output channel (one block spanning the whole row); optionally with each input's
error weighted by H_jj (the clip that minimises the output error of plain rounding). They are computed from the
weight before any column is updated and in the original column order, so reordering the sweep
(act-order) changes which column is fixed first but not which scale a column uses ("static groups":
the exported layer needs no runtime index). Rounding is ``compress.quant.weights``'s
clamp(round(w/s), q_min, q_max)·s, so the codes are exactly what the exporter writes.

Asymmetric blocks (``asymmetric_grid``; ORT's MatMulNBits with zero points) add an integer zero
point z per block: values (clamp(round(w/s) + z, 0, 2^b − 1) − z)·s (``compress.quant.blocks``).
"""

from __future__ import annotations

import torch

from compress.quant.blocks import asymmetric_block_grid, block_codes, block_scales, expand_block_scales
from compress.quant.weights import code_range, quantize_per_channel


def grid_scales(weight: torch.Tensor, bits: int, weight_block: int | None,
                importance: torch.Tensor | None = None) -> torch.Tensor:
    """Scales of ``weight`` (any shape, axis 0 = output channel): [N] per channel, [N, K/B] per block;
    ``importance`` [K] (diag H) weighs each input's rounding error in the clip choice."""
    rows = weight.detach().reshape(weight.shape[0], -1)
    if weight_block is None:
        return block_scales(rows, bits, rows.shape[1], importance)[:, 0]
    return block_scales(rows, bits, weight_block, importance)


def asymmetric_grid(weight: torch.Tensor, bits: int, weight_block: int,
                    importance: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(scales, zero points), each [N, K/B], of the asymmetric block grid of ``weight`` [N, K]."""
    return asymmetric_block_grid(weight.detach().reshape(weight.shape[0], -1), bits, weight_block, importance)


def column_scales(scales: torch.Tensor, columns: int) -> torch.Tensor:
    """The scale of every weight, [N, K], from per-channel [N] or per-block [N, K/B] scales."""
    return expand_block_scales(scales.reshape(scales.shape[0], -1), columns)


def round_to_grid(values: torch.Tensor, scales: torch.Tensor, bits: int, zero_points: torch.Tensor | None = None) -> torch.Tensor:
    """s·clamp(round(v/s), q_min, q_max) elementwise (``values``, ``scales`` and ``zero_points`` of
    one shape); with zero points (clamp(round(v/s) + z, 0, 2^b − 1) − z)·s."""
    if zero_points is None:
        return quantize_per_channel(values.reshape(-1), scales.reshape(-1), bits).reshape(values.shape) * scales
    return (torch.clamp(torch.round(values / scales) + zero_points, *code_range(bits, signed=False)) - zero_points) * scales


def codes(weight: torch.Tensor, scales: torch.Tensor, bits: int, zero_points: torch.Tensor | None = None) -> torch.Tensor:
    """The integer codes the exporter writes for ``weight`` on ``scales`` (per channel or per block;
    asymmetric blocks with ``zero_points``: unsigned codes)."""
    if scales.ndim == 2:
        return block_codes(weight, scales, bits, zero_points)
    return quantize_per_channel(weight, scales, bits)
