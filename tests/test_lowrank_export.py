"""Factorised layers export as ordinary quantized layers: the bias-free first factor of a Linear
(exported by torch as MatMul(x, Transpose(W))) becomes a Gemm, weight-only or static int8, and
ONNX Runtime computes what the fake-quantized model computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compress.errors import InputError
from compress.export.onnx_qdq import export_onnx
from compress.lowrank.apply import apply_lowrank_
from compress.lowrank.settings import LowRankSettings
from compress.quant.quantize import quantize_model_
from compress.quant.records import QuantSettings
from compress.reconstruct.stats import collect_layer_stats


def factorised(tokens: bool = False) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(start_dim=2 if tokens else 1), nn.Linear(16 if tokens else 64, 10)).eval()
    x = torch.randn(8, 4, 4, 4)
    apply_lowrank_(model, {"1": LowRankSettings(rank=3)}, collect_layer_stats(model, [(x,)], ["1"]))
    return model, x


@pytest.mark.parametrize("act_bits", [None, 8])
def test_bias_free_factor_exports_as_gemm(tmp_path, act_bits) -> None:
    import onnx
    import onnxruntime as ort

    model, x = factorised()
    quantize_model_(model, {n: QuantSettings(8, act_bits, method="rtn") for n in ("1.0", "1.1")}, [(x,)])
    path = export_onnx(model, (x,), tmp_path / "model.onnx")
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("Gemm") == 2 and "MatMul" not in ops and "Transpose" not in ops, ops
    got = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5 * np.abs(expected).max())


def test_token_wise_bias_free_factor_folds_weight_only_and_refuses_static_int8(tmp_path) -> None:
    """On token inputs (Transpose → MatMul, no Gemm) a weight-only factor exports in the fold form
    with equal outputs; static int8 activations there still ask for the integer MatMul forms."""
    import onnxruntime as ort

    model, x = factorised(tokens=True)
    quantize_model_(model, {"1.0": QuantSettings(8, None, method="rtn")}, [(x,)])
    path = export_onnx(model, (x,), tmp_path / "model.onnx")
    got = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5 * np.abs(expected).max())
    model, x = factorised(tokens=True)
    quantize_model_(model, {"1.0": QuantSettings(8, 8, method="rtn")}, [(x,)])
    with pytest.raises(InputError, match="act_dynamic, weight_block or float activations"):
        export_onnx(model, (x,), tmp_path / "static.onnx")
