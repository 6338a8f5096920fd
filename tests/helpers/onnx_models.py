"""Hand-built ONNX Q/DQ graphs for the TensorRT rule and engine tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


RNG = np.random.default_rng(0)


def const_tensor(name: str, array: np.ndarray, data_type: int | None = None) -> onnx.TensorProto:
    if data_type is None:
        return numpy_helper.from_array(array, name)
    return helper.make_tensor(name, data_type, array.shape, array.ravel().tolist())


def conv_model(*, opset: int = 13, act_zero: int = 0, act_type: int = TensorProto.INT8, act_scale=None,
               weight_scale=None, weight_axis: int = 0, op: str = "Conv", extra_nodes=(), extra_inits=(),
               extra_outputs=(), weight_type: int = TensorProto.INT8) -> onnx.ModelProto:
    """x (1×4×6×6) → Q → DQ → op(·, DQ(W)) → y, the way a TensorRT-ready exporter writes it: int8
    activations with one scale, int8 per-channel weights along the layer's output channels."""
    c_out = 8
    weight_shape = (c_out, 4, 3, 3) if op == "Conv" else (4, c_out, 3, 3)
    weight_scale = np.full(c_out, 0.02, np.float32) if weight_scale is None else weight_scale
    act_scale = np.array(0.05, np.float32) if act_scale is None else act_scale
    codes = RNG.integers(-7 if weight_type == TensorProto.INT4 else -127, 8, size=weight_shape)
    inits = [
        const_tensor("w_q", codes, weight_type),
        const_tensor("w_scale", weight_scale),
        const_tensor("w_zero", np.zeros(weight_scale.shape, np.int8), weight_type if weight_type != TensorProto.INT8
               else None),
        const_tensor("x_scale", act_scale),
        const_tensor("x_zero", np.full(act_scale.shape, act_zero, np.int8 if act_type == TensorProto.INT8 else np.uint8)),
        *extra_inits,
    ]
    act_axis = {"axis": 1} if act_scale.size > 1 else {}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"], "quant_x", **act_axis),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"], "dequant_x", **act_axis),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], "dequant_w", axis=weight_axis),
        helper.make_node(op, ["x_dq", "w"], ["y"], "layer"),
        *extra_nodes,
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list("nchw")), *extra_outputs], inits)
    opsets = [helper.make_opsetid("", opset), *([helper.make_opsetid("com.microsoft", 1)] if extra_nodes else [])]
    return helper.make_model(graph, opset_imports=opsets)
