"""Quantized builtin:mnist-cnn exported as Q/DQ ONNX: ORT parity on the 1,000 held-out digits,
ORT fusion, and the structure of the TensorRT variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from compress.data.spec import load_data
from compress.export.onnx_qdq import export_onnx
from compress.backends.ort.fusion import check_fusion
from compress.backends.ort.parity import Parity, measure_parity, write_parity
from compress.models.mnist_cnn import MnistCNN
from compress.models.spec import build_model
from compress.quant.quantize import quantize_model_, rebuild_quantized_
from compress.quant.records import QuantRecords, QuantSettings
from compress.quant.weights import weight_code_range
from tests.helpers.onnx_codes import code_storage, layer_codes, layer_scales

onnx = pytest.importorskip("onnx")
LAYERS = ("stem.0", "conv.0", "block.dw.0", "block.pw.0", "head")
MIXED_BITS = {"stem.0": 8, "conv.0": 4, "block.dw.0": 8, "block.pw.0": 4, "head": 4}


def _quantized(signed: bool, mixed: bool) -> tuple[torch.nn.Module, QuantRecords]:
    model = build_model("builtin:mnist-cnn")
    train = load_data("builtin:mnist5k", "train", "train")
    settings = {
        name: QuantSettings(weight_bits=MIXED_BITS[name] if mixed else 8, act_signed=signed) for name in LAYERS
    }
    records = quantize_model_(model, settings, [batch.inputs for batch in train.batches(500)][:2])
    return model, records


@pytest.fixture(scope="module")
def heldout():
    return load_data("builtin:mnist5k", "heldout", "heldout")


@pytest.fixture(scope="module", params=[("ort", False, False), ("ort", False, True), ("tensorrt", True, False), ("tensorrt", True, True)], ids=["ort-w8a8", "ort-mixed", "trt-w8a8", "trt-mixed"])
def exported(request, tmp_path_factory, heldout):
    target, signed, mixed = request.param
    model, records = _quantized(signed, mixed)
    path = export_onnx(model, (heldout.inputs[0][:1],), tmp_path_factory.mktemp(target) / "model.onnx", target)
    return target, model, records, path


def test_parity_with_pytorch_fake_quant(exported, heldout) -> None:
    _, model, _, path = exported
    parity = measure_parity(model, path, [batch.inputs for batch in heldout.batches(250)])
    assert parity.num_examples == 1000
    assert parity.max_error_steps <= 1.0, f"max error {parity.max_error_steps:.3f} output steps"
    assert parity.top1_agreement >= 0.999, f"top-1 agreement {parity.top1_agreement:.4f}"
    written = write_parity(parity, path)
    import json

    assert Parity.from_dict(json.loads(written.read_text())) == parity


def test_weights_are_integer_codes_on_the_layer_grid(exported) -> None:
    """int8 codes, or for ORT at <= 4 bits INT4 or packed bytes (the file at its real size)."""
    target, model, records, path = exported
    proto = onnx.load(str(path))
    for name, record in records.layers.items():
        bits = record.settings.weight_bits
        storage = code_storage(proto, name).data_type
        assert storage in ((onnx.TensorProto.INT4, onnx.TensorProto.UINT8) if target == "ort" and bits <= 4
                           else (onnx.TensorProto.INT8,)), name
        codes = layer_codes(proto, name)
        q_min, q_max = weight_code_range(bits)
        assert q_min <= codes.min() and codes.max() <= q_max
        scales = layer_scales(proto, name).reshape((-1,) + (1,) * (codes.ndim - 1))
        dequantized = codes.astype(np.float32) * scales
        np.testing.assert_array_equal(dequantized, model.get_submodule(name).quantized_weight().detach().numpy())


def test_ort_target_fuses_every_layer(exported) -> None:
    target, _, _, path = exported
    if target != "ort":
        pytest.skip("the TensorRT variant keeps float biases, so ORT does not fuse it (TensorRT does)")
    report = check_fusion(path)
    assert report.fused == {"QLinearConv": 4, "QLinearAdd": 1, "QGemm": 1}
    assert report.float_layers == ()
    # The one Q/DQ node left quantizes the float model input: it is the model's entry, not overhead.
    assert report.unfused_qdq == ("stem.0.input_quantizer/Q",)


def test_tensorrt_target_is_symmetric_qdq_only(exported) -> None:
    target, _, _, path = exported
    if target != "tensorrt":
        pytest.skip("structure rules apply to the TensorRT target")
    model = onnx.load(str(path))
    initializers = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert model.opset_import[0].version >= 13
    for node in model.graph.node:
        assert not node.op_type.startswith("QLinear") and "Integer" not in node.op_type
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero_point = initializers[node.input[2]]
            assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
        if node.op_type == "DequantizeLinear" and initializers[node.input[1]].ndim == 1:
            assert next(a.i for a in node.attribute if a.name == "axis") == 0


def test_records_rebuild_a_model_that_loads_the_state_dict(heldout) -> None:
    model, records = _quantized(signed=True, mixed=True)
    rebuilt = rebuild_quantized_(MnistCNN(), QuantRecords.from_dict(records.to_dict()))
    rebuilt.load_state_dict(model.state_dict())
    images = heldout.inputs[0][:64]
    with torch.no_grad():
        assert torch.equal(rebuilt(images), model(images))
    assert "stem.0.weight" in model.state_dict() and "stem.0.output_quantizer.scale" in model.state_dict()
    assert records.layers["conv.0"].input_from == "stem.0" and records.layers["head"].output is None


def test_float_stem_keeps_max_pool_in_float_and_fuses_the_rest(tmp_path, heldout) -> None:
    """A float stem (1 input channel, slow as QLinearConv) feeding quantized layers through
    Relu → MaxPool: the pool must run in float (ORT's NCHWc kernel), not as NCHW uint8."""
    model = build_model("builtin:mnist-cnn")
    train = load_data("builtin:mnist5k", "train", "train")
    settings = {name: QuantSettings(act_signed=False) for name in LAYERS if name != "stem.0"}
    quantize_model_(model, settings, [batch.inputs for batch in train.batches(500)][:2])
    path = export_onnx(model, (heldout.inputs[0][:1],), tmp_path / "model.onnx", "ort")
    parity = measure_parity(model, path, [batch.inputs for batch in heldout.batches(500)])
    assert parity.max_error_steps <= 1.0, f"max error {parity.max_error_steps:.3f} output steps"
    assert parity.top1_agreement >= 0.999, f"top-1 agreement {parity.top1_agreement:.4f}"
    report = check_fusion(path)
    assert report.fused == {"QLinearConv": 3, "QLinearAdd": 1, "QGemm": 1}
    optimized = onnx.load(report.optimized).graph.node
    assert [n.domain for n in optimized if n.op_type == "MaxPool"] == ["com.microsoft.nchwc"]
