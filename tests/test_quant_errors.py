"""User mistakes in quantization and export are one-line errors of the right kind."""

from __future__ import annotations

import pytest
import torch

from compress.errors import ConfigError, InputError
from compress.export.onnx_qdq import export_onnx
from compress.quant.quantize import quantize_model_
from compress.quant.records import QuantSettings
from compress.quant.weights import weight_code_range
from compress.testing.tiny import tiny_convnet, tiny_data


def test_unknown_layer_and_wrong_kind() -> None:
    with pytest.raises(ConfigError, match="'nope', which is not a module"):
        quantize_model_(tiny_convnet(), {"nope": QuantSettings()}, [])
    with pytest.raises(ConfigError, match="bn is a Identity; only Conv2d and Linear"):  # folded into conv
        quantize_model_(tiny_convnet(), {"bn": QuantSettings()}, [])


def test_empty_calibration_is_refused() -> None:
    with pytest.raises(InputError, match="calibration data is empty"):
        quantize_model_(tiny_convnet(), {"conv": QuantSettings()}, [])


def test_asymmetric_activations_are_refused_for_tensorrt(tmp_path) -> None:
    model = tiny_convnet()
    inputs = tiny_data("conv").inputs
    quantize_model_(model, {"mix": QuantSettings(act_signed=False)}, [inputs])
    with pytest.raises(InputError, match="mix has asymmetric uint8 activations"):
        export_onnx(model, inputs, tmp_path / "m.onnx", target="tensorrt")
    with pytest.raises(InputError, match="unknown export target"):
        export_onnx(model, inputs, tmp_path / "m.onnx", target="tflite")


def test_weight_only_layer_keeps_float_activations() -> None:
    model = tiny_convnet()
    inputs = tiny_data("conv").inputs
    records = quantize_model_(model, {"head": QuantSettings(weight_bits=3, act_bits=None)}, [inputs])
    head = model.head
    assert records.layers["head"].input is None and head.input_quantizer is None
    codes = head.quantized_weight().detach() / torch.tensor(records.layers["head"].weight_scales).reshape(-1, 1)
    q_min, q_max = weight_code_range(3)
    assert torch.equal(codes, codes.round()) and q_min <= codes.min() and codes.max() <= q_max
