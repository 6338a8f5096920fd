"""One planned layer as a stand-alone ONNX graph, for timing on ONNX Runtime, in one of three kinds:

- ``fp32``: float weights;
- ``weight-only``: op(DQ(W int8, per-channel)) on float inputs, as the exporter writes weight-only
  layers (ORT keeps the DequantizeLinear and runs it on every call);
- ``int8``: the pattern ORT fuses into one integer kernel (QLinearConv / QLinearMatMul / QGemm):
  Q(x)→DQ→op(DQ(W int8, per-channel))→Q→DQ, with the bias as int32 at scale s_x·s_w for Conv.

Scales are nominal (timing does not depend on them). A channel-pruned variant keeps the first
⌈(1 − s)·C_out⌉ output channels. Linear layers become MatMul (+ Add bias), which accepts inputs
of any rank (tokens × features included).
"""

from __future__ import annotations

import math

import numpy as np
from torch import nn


def kept_channels(out_channels: int, sparsity: float) -> int:
    return max(1, math.ceil((1 - sparsity) * out_channels))


KINDS = ("fp32", "weight-only", "int8")


def layer_graph(module: nn.Module, input_shape: tuple[int, ...], kind: str, sparsity: float = 0.0):
    """An onnx ModelProto computing ``module`` (Conv2d or Linear) on an input of ``input_shape``."""
    import onnx
    from onnx import TensorProto, helper

    weight = module.weight.detach().float().numpy()
    keep = kept_channels(weight.shape[0], sparsity)
    weight = weight[:keep]
    bias = None if module.bias is None else module.bias.detach().float().numpy()[:keep]
    if _depthwise(module):  # its pruned outputs remove the same input channels
        input_shape = (input_shape[0], keep, *input_shape[2:])
    nodes, inits = [], []
    source, int8 = "x", kind == "int8"
    if int8:
        inits += [_scalar("x_scale", 1 / 64), _scalar("zero", 0, np.int8)]
        nodes += [helper.make_node("QuantizeLinear", ["x", "x_scale", "zero"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "x_scale", "zero"], ["xf"])]
        source = "xf"
    op_output = "y" if not int8 else "y_float"
    if isinstance(module, nn.Conv2d):
        nodes_, inits_ = _conv(module, weight, bias, source, op_output, kind)
    else:
        nodes_, inits_ = _matmul(weight, bias, source, op_output, kind)
    nodes += nodes_
    inits += inits_
    if int8:
        inits.append(_scalar("y_scale", 1 / 16))
        nodes += [helper.make_node("QuantizeLinear", ["y_float", "y_scale", "zero"], ["yq"]),
                  helper.make_node("DequantizeLinear", ["yq", "y_scale", "zero"], ["y"])]
    graph = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * len(input_shape))], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _depthwise(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


def _scalar(name: str, value: float, dtype=np.float32):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.array(value, dtype=dtype), name)


def _int8_weight(weight: np.ndarray, axis: int):
    """Per-channel symmetric int8 codes along ``axis`` and their scales, as DQ inputs."""
    from onnx import numpy_helper

    reduce = tuple(i for i in range(weight.ndim) if i != axis)
    scales = np.maximum(np.abs(weight).max(axis=reduce), 1e-8) / 127
    shape = [1] * weight.ndim
    shape[axis] = -1
    codes = np.clip(np.round(weight / scales.reshape(shape)), -127, 127).astype(np.int8)
    return (numpy_helper.from_array(codes, "w_q"), numpy_helper.from_array(scales.astype(np.float32), "w_scale"),
            numpy_helper.from_array(np.zeros_like(scales, dtype=np.int8), "w_zero"), scales)


def _conv(module: nn.Conv2d, weight, bias, source: str, output: str, kind: str):
    from onnx import helper, numpy_helper

    attributes = dict(kernel_shape=list(module.kernel_size), strides=list(module.stride),
                      pads=list(module.padding) * 2, dilations=list(module.dilation), group=module.groups)
    if _depthwise(module):
        attributes["group"] = weight.shape[0]
    nodes, inits, inputs = [], [], [source, "w"]
    if kind != "fp32":
        w_q, w_scale, w_zero, scales = _int8_weight(weight, 0)
        inits += [w_q, w_scale, w_zero]
        nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=0))
    if kind == "int8":
        if bias is not None:
            b_scales = (scales / 64).astype(np.float32)
            codes = np.round(bias / b_scales).astype(np.int32)
            inits += [numpy_helper.from_array(codes, "b_q"), numpy_helper.from_array(b_scales, "b_scale"),
                      numpy_helper.from_array(np.zeros_like(codes), "b_zero")]
            nodes.append(helper.make_node("DequantizeLinear", ["b_q", "b_scale", "b_zero"], ["b"], axis=0))
            inputs.append("b")
    else:
        if kind == "fp32":
            inits.append(numpy_helper.from_array(weight, "w"))
        if bias is not None:
            inits.append(numpy_helper.from_array(bias, "b"))
            inputs.append("b")
    nodes.append(helper.make_node("Conv", inputs, [output], **attributes))
    return nodes, inits


def _matmul(weight, bias, source: str, output: str, kind: str):
    from onnx import helper, numpy_helper

    transposed = np.ascontiguousarray(weight.T)  # (in, out): MatMul's right operand
    nodes, inits = [], []
    if kind != "fp32":
        w_q, w_scale, w_zero, _ = _int8_weight(transposed, 1)
        inits += [w_q, w_scale, w_zero]
        nodes.append(helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"], axis=1))
    else:
        inits.append(numpy_helper.from_array(transposed, "w"))
    if bias is None:
        nodes.append(helper.make_node("MatMul", [source, "w"], [output]))
        return nodes, inits
    inits.append(numpy_helper.from_array(bias, "b"))
    nodes += [helper.make_node("MatMul", [source, "w"], ["mm"]), helper.make_node("Add", ["mm", "b"], [output])]
    return nodes, inits
