"""Block-wise symmetric weight quantization (the weight format of ONNX Runtime's MatMulNBits).

A Linear weight W ∈ R^{N×K} is cut along its input dimension into blocks of B consecutive values;
block (n, j) = W[n, jB:(j+1)B] gets its own scale s_nj = max|block| / q_max, q_max = 2^(b−1) − 1,
and codes q = clamp(round(W / s_nj), −q_max, q_max). Smaller groups track the local weight range, so
4-bit block quantization loses far less than 4-bit per-channel (the group-wise scheme of GPTQ,
Frantar et al. 2023, §4 "grouping", and of AWQ, Lin et al. 2024).
"""

from __future__ import annotations

import torch

from compress.errors import UserError


def _blocks(weight: torch.Tensor, block: int) -> torch.Tensor:
    """W reshaped to [N, K/B, B]; K must be a multiple of B."""
    rows, columns = weight.shape
    if columns % block:
        raise UserError(f"input features {columns} are not a multiple of weight_block {block}")
    return weight.reshape(rows, columns // block, block)


def block_scales(weight: torch.Tensor, bits: int, block: int) -> torch.Tensor:
    """s_nj = max|W[n, jB:(j+1)B]| / q_max, shape [N, K/B]; 1 for all-zero blocks."""
    q_max = 2 ** (bits - 1) - 1
    largest = _blocks(weight.detach(), block).abs().amax(dim=2)
    return torch.where(largest > 0, largest / q_max, torch.ones_like(largest))


def block_codes(weight: torch.Tensor, scales: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes round(W / s_nj) clamped to [−q_max, q_max], shape [N, K]."""
    q_max = 2 ** (bits - 1) - 1
    block = weight.shape[1] // scales.shape[1]
    codes = torch.clamp(torch.round(_blocks(weight, block) / scales[..., None]), -q_max, q_max)
    return codes.reshape(weight.shape)


def expand_block_scales(scales: torch.Tensor, columns: int) -> torch.Tensor:
    """The [N, K/B] scales repeated to the weight's [N, K] shape."""
    return scales.repeat_interleave(columns // scales.shape[1], dim=1)
