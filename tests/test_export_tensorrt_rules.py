"""The TensorRT structural check: legal Q/DQ graphs pass, each rule-breaking graph is flagged with
exactly its rule, and ONNX Runtime's default (asymmetric uint8) QDQ output is rejected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from compress.errors import InputError
from compress.backends.tensorrt.rules import RULES, check_tensorrt_qdq
from tests.helpers.onnx_models import RNG, const_tensor, conv_model

def matmul_model(*, op: str = "MatMul", trans_b: int = 0, weight_axis: int = 1, block_size: int = 0,
                 weight_type: int = TensorProto.INT8, opset: int = 13) -> onnx.ModelProto:
    """x (2×16) → Q → DQ → MatMul/Gemm with a DQ'd weight (16×8, or 8×16 with transB)."""
    shape = (8, 16) if trans_b else (16, 8)
    if block_size:
        scale_shape = tuple(-(-n // block_size) if i == weight_axis else n for i, n in enumerate(shape))
    else:
        scale_shape = (shape[weight_axis],)
    block = {"block_size": block_size} if block_size else {}
    inits = [const_tensor("w_q", RNG.integers(-7, 8, size=shape), weight_type),
             const_tensor("w_scale", np.full(scale_shape, 0.03, np.float32)),
             const_tensor("x_scale", np.array(0.05, np.float32)), const_tensor("x_zero", np.array(0, np.int8))]
    attrs = {"transB": trans_b} if op == "Gemm" else {}
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"], "quant_x"),
             helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"], "dequant_x"),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale"], ["w"], "dequant_w", axis=weight_axis, **block),
             helper.make_node(op, ["x_dq", "w"], ["y"], "layer", **attrs)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list("nk"))], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def rules_of(model: onnx.ModelProto) -> list[str]:
    return [v.rule for v in check_tensorrt_qdq(model)]


def run_in_ort(model: onnx.ModelProto, shape: tuple[int, ...]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": RNG.standard_normal(shape).astype(np.float32)})[0]


LEGAL = {
    "conv": lambda: conv_model(),
    "conv_transpose": lambda: conv_model(op="ConvTranspose", weight_axis=1),
    "matmul": lambda: matmul_model(),
    "gemm_transb": lambda: matmul_model(op="Gemm", trans_b=1, weight_axis=0),
    "gemm": lambda: matmul_model(op="Gemm", trans_b=0, weight_axis=1),
    "matmul_int4_blocks": lambda: matmul_model(weight_axis=0, block_size=8, weight_type=TensorProto.INT4, opset=21),
}


@pytest.mark.parametrize("name", sorted(LEGAL))
def test_legal_graphs_pass_and_run(name: str) -> None:
    model = LEGAL[name]()
    onnx.checker.check_model(model, full_check=True)
    assert check_tensorrt_qdq(model) == []
    run_in_ort(model, (1, 4, 6, 6) if name.startswith("conv") else (2, 16))  # valid, runnable ONNX


MAT_INTEGER = helper.make_node("MatMulInteger", ["a_int", "a_int"], ["extra"], "int_mm")
A_INT = const_tensor("a_int", np.ones((2, 2), np.int8))
EXTRA_OUT = helper.make_tensor_value_info("extra", TensorProto.INT32, list("ab"))
GELU = helper.make_node("Gelu", ["y"], ["extra"], "ms_gelu", domain="com.microsoft")
QUANT_TAP = helper.make_node("Identity", ["x_q"], ["extra"], "tap")

BROKEN = {
    "opset": lambda: conv_model(opset=12),
    "opset_int4": lambda: matmul_model(weight_axis=0, block_size=8, weight_type=TensorProto.INT4, opset=13),
    "zero_point": lambda: conv_model(act_zero=3),
    "dtype": lambda: conv_model(act_type=TensorProto.UINT8),
    "scale": lambda: conv_model(weight_scale=np.array([0.02] * 7 + [-0.01], np.float32)),
    "scale_nan": lambda: conv_model(act_scale=np.array(np.nan, np.float32)),
    "activation_per_tensor": lambda: conv_model(act_scale=np.full(4, 0.05, np.float32)),
    "weight_axis": lambda: conv_model(weight_axis=1, weight_scale=np.full(4, 0.02, np.float32)),
    "weight_axis_conv_transpose": lambda: conv_model(op="ConvTranspose", weight_axis=0,
                                                     weight_scale=np.full(4, 0.02, np.float32)),
    "weight_axis_gemm": lambda: matmul_model(op="Gemm", trans_b=1, weight_axis=1),
    "channel_count": lambda: conv_model(weight_scale=np.full(7, 0.02, np.float32)),
    "qdq_pair": lambda: conv_model(extra_nodes=[QUANT_TAP], extra_outputs=[EXTRA_OUT]),
    "integer_op": lambda: conv_model(extra_nodes=[MAT_INTEGER], extra_inits=[A_INT], extra_outputs=[EXTRA_OUT]),
    "custom_domain": lambda: conv_model(extra_nodes=[GELU], extra_outputs=[EXTRA_OUT]),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_broken_rule_is_flagged_alone(case: str) -> None:
    rule = next(r for r in RULES if case.startswith(r))
    violations = check_tensorrt_qdq(BROKEN[case]())
    assert [v.rule for v in violations] == [rule] * len(violations) and violations, [str(v) for v in violations]
    assert violations[0].node and violations[0].found


def test_every_rule_has_a_breaking_graph() -> None:
    covered = {next(r for r in RULES if case.startswith(r)) for case in BROKEN}
    assert covered == set(RULES)


def test_violation_names_rule_node_and_finding() -> None:
    violations = check_tensorrt_qdq(conv_model(act_zero=3))
    assert [v.node for v in violations] == ["quant_x", "dequant_x"]
    assert all("[3]" in v.found for v in violations) and str(violations[0]).startswith("zero_point at quant_x: ")


def test_quantize_without_zero_point_defaults_to_uint8() -> None:
    model = conv_model()
    quantize = model.graph.node[0]
    del quantize.input[2]
    assert "dtype" in rules_of(model)


def test_reads_files_and_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(conv_model(act_zero=5), path)
    assert rules_of(path) == ["zero_point", "zero_point"]
    (tmp_path / "bad.onnx").write_bytes(b"\x07not a model")
    with pytest.raises(InputError, match="cannot read ONNX model"):
        check_tensorrt_qdq(tmp_path / "bad.onnx")


class _Reader:
    """Calibration batches for onnxruntime.quantization."""

    def __init__(self) -> None:
        self.batches = iter([{"x": RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(4)])

    def get_next(self):
        return next(self.batches, None)


def _float_conv(path: Path) -> Path:
    inits = [const_tensor("w", RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)),
             const_tensor("b", RNG.standard_normal(4).astype(np.float32))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], "conv"), helper.make_node("Relu", ["c"], ["y"], "relu")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list("nchw"))], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def _ort_quantized(tmp_path: Path, **options) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantFormat, quantize_static

    out = tmp_path / f"q{len(options)}.onnx"
    quantize_static(str(_float_conv(tmp_path / "float.onnx")), str(out), _Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, **options)
    return onnx.load(out)


def test_onnxruntime_default_qdq_output_is_flagged_asymmetric(tmp_path: Path) -> None:
    """ORT's defaults: asymmetric activations (calibrated zero points) and an int32 bias DQ."""
    violations = check_tensorrt_qdq(_ort_quantized(tmp_path))
    asymmetric = {v.node for v in violations if v.rule == "zero_point"}
    assert {"x_QuantizeLinear", "x_DequantizeLinear"} <= asymmetric, [str(v) for v in violations]
    assert any(v.rule == "dtype" and "int32" in v.found for v in violations), [str(v) for v in violations]


def test_onnxruntime_symmetric_int8_qdq_output_passes(tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType

    model = _ort_quantized(tmp_path, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                           extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                          "QuantizeBias": False})
    assert sum(node.op_type == "DequantizeLinear" for node in model.graph.node) >= 2  # activations and weight
    assert check_tensorrt_qdq(model) == []
