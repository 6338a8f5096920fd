"""Asymmetric 4-bit weight blocks (``symmetric: false``, ORT only) end to end: the recipe key and its
TensorRT refusal, the fake-quantized layer with GPTQ's fixed zero points, records that rebuild it,
the packed checkpoint bit for bit, and ONNX Runtime's MatMulNBits with zero points against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compress.errors import ConfigError
from compress.pack.state import read_packed_state, write_packed_state
from compress.quant.quantize import quantize_model_, rebuild_quantized_, records_of
from compress.quant.records import QuantRecords, QuantSettings
from compress.reconstruct.layer import ReconstructSettings
from compress.reconstruct.sequential import reconstruct_model_
from compress.recipe.schema import parse_recipe
from tests.test_export_onnx_matmul import LINEARS, TinyBlock, _inputs, _ort_outputs
from tests.test_recipe import problems_of, with_rules

ASYMMETRIC = QuantSettings(weight_bits=4, act_bits=None, weight_block=32, symmetric=False)


def test_recipe_key_is_ort_only_and_needs_blocks() -> None:
    rules = with_rules({"default": {"weight_bits": 4, "act_bits": None, "weight_block": 32, "symmetric": False}})
    assert parse_recipe({**rules, "export": {"targets": ["ort"]}}, "r").export["targets"] == ["ort"]
    assert problems_of({**rules, "export": {"targets": ["ort", "tensorrt"]}}) == [
        "quantization.layers.default.symmetric: false is not allowed with the tensorrt target (allowed: true; "
        "TensorRT needs symmetric weights)"]
    with pytest.raises(ConfigError, match="needs weight_block"):
        QuantSettings(weight_bits=4, act_bits=None, symmetric=False)


def _reconstructed() -> tuple[TinyBlock, TinyBlock]:
    """A float TinyBlock and its copy reconstructed by asymmetric GPTQ and quantized with the fixed grid."""
    torch.manual_seed(0)
    model = TinyBlock().eval()
    reference = TinyBlock().eval()
    reference.load_state_dict(model.state_dict())
    batches = [_inputs(seed) for seed in range(3)]
    settings = {name: ReconstructSettings(bits=4, weight_block=32, symmetric=False) for name in LINEARS}
    results, _ = reconstruct_model_(model, settings, batches)
    scales = {n: r.scales for n, r in results.items()}
    zeros = {n: r.zero_points for n, r in results.items()}
    quantize_model_(model, dict.fromkeys(LINEARS, ASYMMETRIC), [], scales, zeros)
    for name in LINEARS:  # the fake-quantized weight is the reconstruction (up to float32 rounding of (q − z)·s)
        torch.testing.assert_close(model.get_submodule(name).quantized_weight(), results[name].weight, rtol=1e-6, atol=0)
        assert results[name].codes(4).max() == 15 or results[name].codes(4).min() == 0
    return reference, model


def test_records_and_packed_state_rebuild_bit_for_bit(tmp_path) -> None:
    _, model = _reconstructed()
    records = QuantRecords.from_dict(records_of(model, ()).to_dict())
    assert len(records.layers["up"].weight_zero_points) == 128 * 2
    write_packed_state(tmp_path / "weights.safetensors", model)
    rebuilt = rebuild_quantized_(TinyBlock(), records)
    rebuilt.load_state_dict(read_packed_state(tmp_path / "weights.safetensors"))
    inputs = _inputs(5)
    with torch.no_grad():
        assert torch.equal(rebuilt(*inputs), model(*inputs))


def test_round_to_nearest_asymmetric_layer_is_the_zero_point_grid() -> None:
    torch.manual_seed(0)
    model = TinyBlock().eval()
    weights = {name: model.get_submodule(name).weight.detach().clone() for name in LINEARS}
    quantize_model_(model, dict.fromkeys(LINEARS, ASYMMETRIC), [])
    symmetric = TinyBlock().eval()
    quantize_model_(symmetric, dict.fromkeys(LINEARS, QuantSettings(weight_bits=4, act_bits=None, weight_block=32)), [])
    for name in LINEARS:
        layer, weight = model.get_submodule(name), weights[name]
        scales = layer.weight_scales().repeat_interleave(32, dim=1)
        zeros = layer.weight_zero_points().repeat_interleave(32, dim=1)
        expected = (torch.clamp(torch.round(weight / scales) + zeros, 0, 15) - zeros) * scales
        torch.testing.assert_close(layer.quantized_weight(), expected, rtol=0, atol=0)
        assert torch.equal(zeros, zeros.round()) and zeros.min() >= 0 and zeros.max() <= 15
        error = (layer.quantized_weight() - weight).pow(2).sum()
        assert error < (symmetric.get_submodule(name).quantized_weight() - weight).pow(2).sum()


def test_ort_matmulnbits_with_zero_points_matches_pytorch(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    from compress.backends.ort.fusion import check_fusion
    from compress.export.onnx_qdq import export_onnx

    _, model = _reconstructed()
    path = export_onnx(model, _inputs(0), tmp_path / "tiny.onnx", "ort")
    assert check_fusion(path).fused == {"MatMulNBits": 6}
    for seed, tokens in ((1, 12), (2, 20)):
        inputs = _inputs(seed, tokens=tokens)
        with torch.no_grad():
            expected = model(*inputs).numpy()
        error = np.abs(_ort_outputs(path, inputs) - expected).max()
        assert error < 1e-4 * np.abs(expected).max(), f"max |ORT - PyTorch| = {error:.2e}"


def test_hf_target_refuses_asymmetric_blocks(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    from compress.errors import InputError
    from compress.export.hf import export_hf

    config = transformers.BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=128, max_position_embeddings=32)
    model = transformers.BertModel(config, add_pooling_layer=False).eval()
    linears = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    quantize_model_(model, dict.fromkeys(linears, ASYMMETRIC), [])
    with pytest.raises(InputError, match="symmetric false"):
        export_hf(model, tmp_path / "hf")
