"""Property tests of the weight quantizer and the pruning masks (hypothesis)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.prune.masks import channel_mask, magnitude_mask, two_four_mask
from compress.quant.weights import (
    code_range, fake_quantize_per_channel, per_channel_scales, quantize_per_channel, weight_code_range,
)

shapes = st.tuples(st.integers(1, 8), st.integers(1, 12))


def weights(shape, seed: int, scale: float) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


@settings(max_examples=60, deadline=None)
@given(shape=shapes, bits=st.integers(2, 8), seed=st.integers(0, 10_000), scale=st.floats(1e-3, 1e3))
def test_quantization_error_is_at_most_half_a_step(shape, bits, seed, scale) -> None:
    weight = weights(shape, seed, scale)
    steps = per_channel_scales(weight, bits)[:, None]
    error = (fake_quantize_per_channel(weight, bits) - weight).abs()
    assert bool((error <= steps / 2 * (1 + 1e-6)).all()), float((error / steps).max())


@settings(max_examples=60, deadline=None)
@given(shape=shapes, bits=st.integers(2, 8), seed=st.integers(0, 10_000))
def test_quantize_dequantize_is_the_identity_on_the_grid(shape, bits, seed) -> None:
    weight = weights(shape, seed, 1.0)
    scales = per_channel_scales(weight, bits)
    q_min, q_max = weight_code_range(bits)
    codes = torch.randint(q_min, q_max + 1, shape, generator=torch.Generator().manual_seed(seed))
    on_grid = codes * scales[:, None]
    assert torch.equal(quantize_per_channel(on_grid, scales, bits), codes.float())


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_weight_codes_are_the_integer_type_from_3_bits_and_ternary_at_2(bits: int) -> None:
    assert code_range(bits) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    assert code_range(bits, signed=False) == (0, 2**bits - 1)
    assert weight_code_range(bits) == ((-1, 1) if bits == 2 else code_range(bits))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_the_scale_puts_each_channels_extreme_on_an_end_code(bits: int) -> None:
    """Row 0's extreme is positive (→ q_max), row 1's negative (→ q_min), row 2 is all zero (scale
    1): every row uses the whole range without clipping."""
    weight = torch.tensor([[0.5, -0.9, 1.0, 0.0], [0.5, -1.0, 0.3, 0.1], [0.0, 0.0, 0.0, 0.0]])
    q_min, q_max = (-1, 1) if bits == 2 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    scales = per_channel_scales(weight, bits)
    torch.testing.assert_close(scales, torch.tensor([1.0 / q_max, 1.0 / -q_min, 1.0]))
    codes = quantize_per_channel(weight, scales, bits)
    assert codes[0].max() == q_max and codes[1].min() == q_min


@settings(max_examples=60, deadline=None)
@given(shape=shapes, sparsity=st.floats(0, 1), seed=st.integers(0, 10_000))
def test_magnitude_mask_keeps_the_requested_ratio_of_the_largest(shape, sparsity, seed) -> None:
    weight = weights(shape, seed, 1.0)
    mask = magnitude_mask(weight, sparsity)
    assert int(mask.sum()) == round((1 - sparsity) * weight.numel())
    if 0 < int(mask.sum()) < weight.numel():
        assert float(weight.abs()[mask].min()) >= float(weight.abs()[~mask].max())


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 6), groups=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_two_four_mask_keeps_two_largest_of_every_four(rows, groups, seed) -> None:
    weight = weights((rows, 4 * groups), seed, 1.0)
    mask = two_four_mask(weight).reshape(rows, groups, 4)
    assert bool((mask.sum(dim=-1) == 2).all())
    grouped = weight.abs().reshape(rows, groups, 4)
    kept_min = torch.where(mask, grouped, torch.inf).amin(dim=-1)
    dropped_max = torch.where(~mask, grouped, -torch.inf).amax(dim=-1)
    assert bool((kept_min >= dropped_max).all())


def test_channel_mask_removes_whole_channels_of_smallest_norm() -> None:
    weight = torch.arange(1.0, 9.0)[:, None, None, None] * torch.ones(8, 2, 3, 3)
    mask = channel_mask(weight, 0.5)
    assert mask.shape == weight.shape
    assert mask.reshape(8, -1).all(dim=1).tolist() == [False] * 4 + [True] * 4


def test_compress_weights_touches_only_the_named_layers() -> None:
    from compress.plan.sensitivity import LayerOption
    from compress.quant.apply import compress_weights_

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    compress_weights_(model, {"1": LayerOption(2, 0.5)})
    after = model.state_dict()
    assert torch.equal(after["0.weight"], before["0.weight"]) and torch.equal(after["1.bias"], before["1.bias"])
    codes = after["1.weight"] / per_channel_scales(after["1.weight"], 2)[:, None]
    assert torch.allclose(codes, codes.round(), atol=1e-5) and int((after["1.weight"] == 0).sum()) >= 16
