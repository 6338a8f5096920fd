"""Bit packing: unsigned integers of b bits (1 ≤ b ≤ 8) as a little-endian bit stream.

Value i occupies stream bits [i·b, (i+1)·b), least significant bit first; stream bit j is bit
j mod 8 of byte ⌊j/8⌋, and the last byte is padded with zeros. For b = 4 this is the layout of
ONNX INT4/UINT4 tensors and of MatMulNBits (two values per byte, low nibble first); for b = 8 it
is the plain byte array. n values take ⌈n·b/8⌉ bytes.
"""

from __future__ import annotations

import torch

MAX_BITS = 8


def packed_bytes(count: int, bits: int) -> int:
    """⌈count·bits/8⌉: the size of ``count`` packed values."""
    return (count * bits + 7) // 8


def pack_bits(values: torch.Tensor, bits: int) -> torch.Tensor:
    """The values (integers in [0, 2^bits)) as a uint8 stream of ``packed_bytes(numel, bits)``."""
    _check_bits(bits)
    flat = values.reshape(-1).to(torch.int32)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 2**bits):
        raise ValueError(f"values must lie in [0, {2**bits}) to pack at {bits} bits")
    stream = ((flat[:, None] >> torch.arange(bits, dtype=torch.int32)) & 1).reshape(-1)
    padding = -stream.numel() % 8
    stream = torch.cat([stream, stream.new_zeros(padding)]).reshape(-1, 8)
    return (stream << torch.arange(8, dtype=torch.int32)).sum(dim=1).to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """The first ``count`` values (int64) of the stream ``packed`` written by ``pack_bits``."""
    _check_bits(bits)
    if packed.numel() != packed_bytes(count, bits):
        raise ValueError(f"{packed.numel()} bytes do not hold {count} values of {bits} bits")
    stream = ((packed.to(torch.int64)[:, None] >> torch.arange(8)) & 1).reshape(-1)
    stream = stream[: count * bits].reshape(count, bits)
    return (stream << torch.arange(bits)).sum(dim=1)


def _check_bits(bits: int) -> None:
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in 1..{MAX_BITS}, got {bits}")
