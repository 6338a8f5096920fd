"""Bit packing and weight codes: round trips at every width, the byte layout against a plain
reference, the smaller of dense and masked storage, and dequantized weights from which a layer
re-derives exactly the scales it was quantized with."""

from __future__ import annotations

import pytest
import torch

from compress.pack.bits import pack_bits, packed_bytes, unpack_bits
from compress.pack.codes import decode_codes, dequantized_weight, encode_codes
from compress.quant.blocks import block_codes, block_scales, expand_block_scales
from compress.quant.weights import code_range, per_channel_scales, quantize_per_channel


def _reference_stream(values: list[int], bits: int) -> bytes:
    """Little-endian bit stream, one Python int at a time."""
    number = sum(v << (i * bits) for i, v in enumerate(values))
    return number.to_bytes(packed_bytes(len(values), bits), "little")


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("count", [0, 1, 7, 8, 1001])
def test_pack_round_trip_and_layout(bits: int, count: int) -> None:
    values = torch.randint(0, 2**bits, (count,), generator=torch.Generator().manual_seed(bits * 1000 + count))
    packed = pack_bits(values, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == packed_bytes(count, bits)
    assert bytes(packed.tolist()) == _reference_stream(values.tolist(), bits)
    assert torch.equal(unpack_bits(packed, bits, count), values)


def test_four_bits_are_low_nibble_first() -> None:
    """The ONNX INT4 / MatMulNBits byte layout."""
    assert pack_bits(torch.tensor([0x3, 0xA, 0xF]), 4).tolist() == [0xA3, 0x0F]


def test_out_of_range_values_are_refused() -> None:
    with pytest.raises(ValueError):
        pack_bits(torch.tensor([4]), 2)
    with pytest.raises(ValueError):
        unpack_bits(torch.zeros(3, dtype=torch.uint8), 4, 7)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("zeros", [0.0, 0.5, 0.9])
def test_codes_round_trip_in_the_smaller_form(bits: int, zeros: float) -> None:
    generator = torch.Generator().manual_seed(bits)
    q_min, q_max = code_range(bits)
    codes = torch.randint(q_min, q_max + 1, (37, 19), generator=generator)
    codes[torch.rand(codes.shape, generator=generator) < zeros] = 0
    encoded = encode_codes(codes, bits)
    kept = int((codes != 0).sum())
    dense, masked = packed_bytes(codes.numel(), bits), packed_bytes(codes.numel(), 1) + packed_bytes(kept, bits)
    assert encoded.payload.numel() == min(dense, masked) and encoded.masked == (masked < dense)
    decoded = decode_codes(encoded.payload, bits, codes.numel(), encoded.masked, encoded.kept)
    assert torch.equal(decoded.reshape(codes.shape), codes)


def test_every_stored_value_is_a_code() -> None:
    """u = 0 is the code q_min = −8, u = 15 the code 7 (the whole 4-bit range is used)."""
    decoded = decode_codes(torch.tensor([0x00, 0xFF], dtype=torch.uint8), 4, 4, False, 4)
    assert decoded.tolist() == [-8, -8, 7, 7]


def test_a_keep_mask_that_disagrees_with_the_metadata_is_refused() -> None:
    with pytest.raises(ValueError, match="keep-mask"):
        decode_codes(torch.tensor([0b0011, 0x77], dtype=torch.uint8), 4, 4, True, 3)


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
def test_per_channel_scales_are_rederived_exactly(bits: int) -> None:
    weight = torch.randn(4096, 3, 3, 3, generator=torch.Generator().manual_seed(bits))
    scales = per_channel_scales(weight, bits)
    codes = quantize_per_channel(weight, scales, bits)
    restored = dequantized_weight(codes, scales.reshape(-1, 1, 1, 1), torch.float32)
    assert torch.equal(per_channel_scales(restored, bits), scales)
    assert torch.equal(quantize_per_channel(restored, scales, bits), codes)


@pytest.mark.parametrize("bits", [3, 4])
def test_block_scales_are_rederived_exactly(bits: int) -> None:
    weight = torch.randn(512, 128, generator=torch.Generator().manual_seed(bits))
    scales = block_scales(weight, bits, 16)
    codes = block_codes(weight, scales, bits)
    restored = dequantized_weight(codes, expand_block_scales(scales, 128), torch.float32)
    assert torch.equal(block_scales(restored, bits, 16), scales)
    assert torch.equal(block_codes(restored, scales, bits), codes)
