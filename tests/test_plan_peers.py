"""ModelOpt ``auto_quantize`` as a side-by-side peer: its choices, read back from its quantizers,
meet our avg_bits budget; its per-channel format is our quantizer; it refuses what it cannot cost."""

from __future__ import annotations

import pytest
import torch

from compress.errors import InputError
from compress.plan.make import plannable_layers
from compress.plan.peers import PeerResult, average_bits, gap_in_steps, modelopt_auto_quantize
from compress.testing.tiny import tiny_convnet, tiny_data, trained


@pytest.fixture(scope="module")
def searched():
    data = tiny_data("conv", 64)
    model = trained(tiny_convnet(), data, steps=100)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    peer, result = modelopt_auto_quantize(model, data, avg_bits=3.0, batch_size=32)
    return model, before, peer, result, data


def test_bits_read_back_meet_the_budget(searched) -> None:
    model, _, peer, result, _ = searched
    sizes = {n: m.weight.numel() for n, m in plannable_layers(model).items()}
    assert set(result.layers) == set(sizes) and result.satisfied
    bits = {n: layer.num_bits for n, layer in result.layers.items()}
    assert all(b in (2, 3, 4, 8, None) for b in bits.values()), bits
    expected = sum(sizes[n] * (32 if b is None else b) for n, b in bits.items()) / sum(sizes.values())
    assert result.avg_bits == pytest.approx(expected, rel=1e-12) == average_bits(model, bits)
    assert result.avg_bits <= 3.0 + 1e-9, result.avg_bits
    # matched cost: ModelOpt's own figure is ours scaled by 16/32
    assert result.reported_effective_bits == pytest.approx(result.avg_bits / 2, rel=1e-9)
    for name, module in plannable_layers(peer).items():
        assert (module.weight_quantizer.num_bits if module.weight_quantizer.is_enabled else None) == bits[name]


def test_modelopt_quantizer_is_the_narrow_symmetric_per_channel_grid(searched) -> None:
    """ModelOpt's weight quantizer is per channel with s = max|W_c|/q_max and codes −q_max…q_max,
    q_max = 2^(b−1) − 1 (reference written here); ours (``weight_code_range``) also uses the code
    −2^(b−1) from 3 bits up, with its own scale, so the two are at most one of our steps apart."""
    _, _, peer, result, _ = searched
    for name, module in plannable_layers(peer).items():
        if result.layers[name].num_bits is not None:
            assert result.layers[name].granularity == "per-channel axis 0"
            bits = int(module.weight_quantizer.num_bits)
            with torch.no_grad():
                weight = module.weight.detach()
                q_max = 2 ** (bits - 1) - 1
                step = weight.abs().reshape(weight.shape[0], -1).amax(dim=1).reshape((-1,) + (1,) * (weight.ndim - 1)) / q_max
                narrow = torch.clamp(torch.round(weight / step), -q_max, q_max) * step
                gap = float(((module.weight_quantizer(weight) - narrow).abs() / step).max())
            assert gap < 1e-4, f"{name}: ModelOpt differs from the narrow grid by {gap} steps"
            assert gap_in_steps(module) <= 1 + 1e-4


def test_input_model_untouched_and_result_round_trips(searched) -> None:
    model, before, _, result, _ = searched
    after = model.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert PeerResult.from_dict(result.to_dict()) == result


def test_budget_below_the_most_aggressive_format_is_a_user_error(searched) -> None:
    model, _, _, _, data = searched
    with pytest.raises(InputError, match="INT4_BLOCKWISE_WEIGHT_ONLY_CFG"):
        modelopt_auto_quantize(model, data, 3.0, ("INT4_BLOCKWISE_WEIGHT_ONLY_CFG",), float_bits=16, batch_size=32)
