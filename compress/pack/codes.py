"""Symmetric integer weight codes at their bit width, and the float weight they stand for.

A b-bit symmetric code q (``compress.quant.weights.weight_code_range``, inside the b-bit integer
range [q_min, q_max] = [−2^(b−1), 2^(b−1) − 1] of ``code_range``) is stored as the unsigned
u = q − q_min ∈ [0, 2^b − 1]. Zeros (pruned or rounded to 0) are implied in one of two ways,
whichever is smaller:

- dense: all n codes, n·b bits;
- masked: a 1-bit keep-mask (q ≠ 0) followed by the k non-zero codes, n + k·b bits.

The float weight written back for a code is q·s. Asymmetric blocks (unsigned codes u ∈ [0, 2^b − 1]
and zero points z) are passed in as q = u + q_min, so they are stored as u itself, and written
back as (u − z)·s. A layer whose scale is derived from its weight (the symmetric scale
s = fl(max(m⁺/q_max, m⁻/(−q_min))), per channel, or per block with the clip α = 1 that such a weight
makes optimal) derives exactly s again from it, because fl(fl(q_max·fl(m/q_max))/q_max) =
fl(m/q_max) in float32 and the grid's −q_min is a power of 2 (checked in
``tests/test_pack_bits.py``), and round(q·s/s) = q: the reloaded layer computes bit for bit what the written one computed. Scales that are not derived
from the weight (learned, fixed) are state-dict entries of their own and stored as such.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compress.pack.bits import pack_bits, packed_bytes, unpack_bits
from compress.quant.weights import code_range


@dataclass(frozen=True)
class EncodedCodes:
    """``payload``: the packed bytes; ``masked``: keep-mask + non-zero codes; ``kept``: their count."""

    payload: torch.Tensor
    masked: bool
    kept: int


def encoded_size(count: int, bits: int, masked: bool, kept: int) -> int:
    """Bytes of ``count`` codes of ``bits`` bits, dense or masked (``kept`` non-zero)."""
    return packed_bytes(count, 1) + packed_bytes(kept, bits) if masked else packed_bytes(count, bits)


def encode_codes(codes: torch.Tensor, bits: int) -> EncodedCodes:
    """Pack the signed codes (any shape) densely or masked, whichever takes fewer bytes."""
    flat = codes.reshape(-1).to(torch.int64)
    offset = -code_range(bits)[0]
    nonzero = flat != 0
    kept = int(nonzero.sum())
    if encoded_size(flat.numel(), bits, True, kept) < encoded_size(flat.numel(), bits, False, kept):
        payload = torch.cat([pack_bits(nonzero, 1), pack_bits(flat[nonzero] + offset, bits)])
        return EncodedCodes(payload, True, kept)
    return EncodedCodes(pack_bits(flat + offset, bits), False, kept)


def decode_codes(payload: torch.Tensor, bits: int, count: int, masked: bool, kept: int) -> torch.Tensor:
    """The ``count`` signed codes (int64, flat) of ``encode_codes``; ValueError if the keep-mask
    disagrees with ``kept``."""
    offset = -code_range(bits)[0]
    if not masked:
        stored = unpack_bits(payload, bits, count)
    else:
        split = packed_bytes(count, 1)
        nonzero = unpack_bits(payload[:split], 1, count).bool()
        if int(nonzero.sum()) != kept:
            raise ValueError(f"the keep-mask marks {int(nonzero.sum())} codes, the metadata says {kept}")
        stored = torch.full((count,), offset, dtype=torch.int64)
        stored[nonzero] = unpack_bits(payload[split:], bits, kept)
    return stored - offset


def dequantized_weight(codes: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """q·s; ``scales`` broadcasts against ``codes`` (per channel [C, 1, …], or per block expanded)."""
    return codes.to(dtype) * scales.to(dtype)
