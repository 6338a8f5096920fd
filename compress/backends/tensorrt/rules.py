"""Our structural check of TensorRT's explicit-quantization rules for an ONNX Q/DQ graph.

TensorRT builds an INT8 engine from explicit QuantizeLinear/DequantizeLinear (Q/DQ) pairs only
when the graph follows its quantization scheme (NVIDIA, "Working with Quantized Types", TensorRT
10/11 developer guide; the ONNX parser's Q/DQ importer): quantization is symmetric,
x_q = clamp(round(x / s), −128, 127) and x = s · x_q, so

- ``opset``: the default-domain opset is ≥ 13 (per-axis Q/DQ), ≥ 21 when any Q/DQ is int4 or
  block-quantized (``block_size``);
- ``zero_point``: every zero point is a constant and all zeros;
- ``dtype``: the quantized type is int8, or int4 for constant weights (no uint8, whose default a
  QuantizeLinear without zero point or ``output_dtype`` takes);
- ``scale``: every scale is a constant, finite and positive;
- ``activation_per_tensor``: activations (non-constant inputs) have one scale;
- ``weight_axis``: per-channel weight scales run along the output channels: axis 0 for Conv,
  1 for ConvTranspose (weights are C_in × C_out/g × k…), the last axis for a MatMul weight
  (K × N), 0 or 1 for a Gemm weight with ``transB`` 1 or 0;
- ``channel_count``: a per-channel scale has one entry per channel along its axis (block
  quantization: ⌈n / block_size⌉ along the axis, the tensor's size elsewhere);
- ``qdq_pair``: every QuantizeLinear feeds DequantizeLinear nodes only (explicit pairs);
- ``integer_op``: no integer-only operators (QLinear*, ConvInteger, MatMulInteger, MatMulNBits,
  QGemm, DynamicQuantizeLinear …), which TensorRT does not import;
- ``custom_domain``: no operator outside the ONNX domain (it would need a TensorRT plugin).

Only the top-level graph is checked (not If/Loop bodies).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compress.errors import InputError

if TYPE_CHECKING:
    from onnx import ModelProto, NodeProto

RULES = ("opset", "zero_point", "dtype", "scale", "activation_per_tensor", "weight_axis", "channel_count",
         "qdq_pair", "integer_op", "custom_domain")
MIN_OPSET, MIN_OPSET_INT4 = 13, 21
UINT8, INT8, UINT4, INT4 = 2, 3, 21, 22  # onnx.TensorProto data types (fixed by the ONNX spec)
TYPE_NAMES = {1: "float", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 10: "float16",
              16: "bfloat16", 17: "float8e4m3fn", 19: "float8e5m2", 21: "uint4", 22: "int4"}
INTEGER_OPS = frozenset({"ConvInteger", "MatMulInteger", "MatMulNBits", "QGemm", "DynamicQuantizeLinear",
                         "DynamicQuantizeMatMul", "QAttention", "QEmbedLayerNormalization", "QOrderedMatMul",
                         "MatMulIntegerToFloat", "GatherBlockQuantized"})
WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "MatMul": 1, "Gemm": 1}
ONNX_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class Violation:
    """One broken rule: which rule (one of ``RULES``), at which node, and what was found."""

    rule: str
    node: str
    found: str

    def __str__(self) -> str:
        return f"{self.rule} at {self.node}: {self.found}"


@dataclass(frozen=True)
class QdqNode:
    """A Q or DQ node with its constant parameters resolved (None where not a constant)."""

    name: str
    node: "NodeProto"
    scale: np.ndarray | None
    zero_point: np.ndarray | None
    has_zero_point: bool
    quant_type: int | None  # onnx data type of the quantized side; None if unknown
    axis: int
    block_size: int
    shape: tuple[int, ...] | None  # of the quantized/dequantized tensor, when known
    on_constant: bool  # the tensor is a weight (constant, or Q of a constant)


def check_tensorrt_qdq(model: "ModelProto | str | Path") -> list[Violation]:
    """Every violation of TensorRT's explicit-quantization rules in ``model`` (empty: it passes)."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = _load(Path(model))
    graph = _Graph(model)
    qdq = [graph.qdq(node) for node in graph.nodes if node.op_type in ("QuantizeLinear", "DequantizeLinear")
           and node.domain in ONNX_DOMAINS]
    violations = _opset(graph, qdq)
    for item in qdq:
        violations += _zero_point(item) + _dtype(item) + _scale(item) + _per_tensor_activation(item)
        violations += _channel_count(item) + _weight_axis(graph, item)
    violations += _pairs(graph) + _operators(graph)
    return violations


def _load(path: Path) -> "ModelProto":
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(path))
    except (OSError, DecodeError) as exc:
        raise InputError(f"cannot read ONNX model {path}: {exc}") from exc


class _Graph:
    """Name lookups over the top-level graph: constants, producers, consumers, static shapes."""

    def __init__(self, model: "ModelProto") -> None:
        from onnx import numpy_helper

        self.opset = next((o.version for o in model.opset_import if o.domain in ONNX_DOMAINS), 0)
        graph = model.graph
        self.nodes = list(graph.node)
        self.names = {id(n): n.name or f"{n.op_type}#{i}" for i, n in enumerate(self.nodes)}
        tensors = {t.name: t for t in graph.initializer}
        tensors.update({n.output[0]: a.t for n in self.nodes if n.op_type == "Constant"
                        for a in n.attribute if a.name == "value"})
        self.types = {name: t.data_type for name, t in tensors.items()}
        self.constants = {name: numpy_helper.to_array(t) for name, t in tensors.items()}
        self.shapes = {name: tuple(t.dims) for name, t in tensors.items()}
        for info in (*graph.input, *graph.value_info, *graph.output):
            self._record_value_info(info)
        self.producer = {out: n for n in self.nodes for out in n.output}
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.graph_outputs = {o.name for o in graph.output}

    def _record_value_info(self, info) -> None:
        tensor_type = info.type.tensor_type
        self.types.setdefault(info.name, tensor_type.elem_type)
        dims = tensor_type.shape.dim
        if tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            self.shapes.setdefault(info.name, tuple(d.dim_value for d in dims))

    def name(self, node: "NodeProto") -> str:
        return self.names[id(node)]

    def qdq(self, node: "NodeProto") -> QdqNode:
        attrs = {a.name: a.i for a in node.attribute if a.type == a.INT}
        inputs = list(node.input) + [""] * (3 - len(node.input))
        x, scale, zero = inputs[:3]
        upstream = self.producer.get(x)
        from_quantize = upstream is not None and upstream.op_type == "QuantizeLinear"
        on_constant = x in self.constants or (from_quantize and upstream.input[0] in self.constants)
        shape = self.shapes.get(x) or (self.shapes.get(upstream.input[0]) if from_quantize else None)
        return QdqNode(self.name(node), node, self.constants.get(scale), self.constants.get(zero), bool(zero),
                       self._quant_type(node, x, zero, attrs, upstream if from_quantize else None),
                       attrs.get("axis", 1), attrs.get("block_size", 0), shape, on_constant)

    def _quant_type(self, node, x: str, zero: str, attrs: dict[str, int], quantize) -> int | None:
        """The integer type: the zero point's, else Q's ``output_dtype`` (default uint8), else for
        DQ the type of its input or of the Q that feeds it."""
        if zero and zero in self.types:
            return self.types[zero]
        if node.op_type == "QuantizeLinear":
            return attrs.get("output_dtype") or UINT8
        if quantize is not None:
            return self.qdq(quantize).quant_type
        return self.types.get(x)


def _opset(graph: _Graph, qdq: list[QdqNode]) -> list[Violation]:
    if graph.opset < MIN_OPSET:
        return [Violation("opset", "model", f"opset {graph.opset}; TensorRT's Q/DQ import needs >= {MIN_OPSET}")]
    needs_21 = [q for q in qdq if q.quant_type in (INT4, UINT4) or q.block_size > 0]
    if needs_21 and graph.opset < MIN_OPSET_INT4:
        return [Violation("opset", needs_21[0].name,
                          f"opset {graph.opset} with int4 or block quantization; needs >= {MIN_OPSET_INT4}")]
    return []


def _zero_point(q: QdqNode) -> list[Violation]:
    if not q.has_zero_point:
        return []
    if q.zero_point is None:
        return [Violation("zero_point", q.name, "zero point is not a constant")]
    values = np.asarray(q.zero_point).astype(np.int64)
    if np.any(values != 0):
        return [Violation("zero_point", q.name, f"nonzero zero point(s) {sorted(set(values.ravel().tolist()))[:4]}; "
                          "TensorRT quantization is symmetric")]
    return []


def _dtype(q: QdqNode) -> list[Violation]:
    if q.quant_type is None or q.quant_type == INT8 or (q.quant_type == INT4 and q.on_constant):
        return []
    found = TYPE_NAMES.get(q.quant_type, f"type {q.quant_type}")
    why = "int4 is for constant weights only" if q.quant_type == INT4 else "TensorRT takes int8 (int4 weights)"
    return [Violation("dtype", q.name, f"{found}; {why}")]


def _scale(q: QdqNode) -> list[Violation]:
    if q.scale is None:
        return [Violation("scale", q.name, "scale is not a constant")]
    scale = np.asarray(q.scale, dtype=np.float64)
    bad = scale[~(np.isfinite(scale) & (scale > 0))]
    if bad.size:
        return [Violation("scale", q.name, f"scale(s) {bad.ravel()[:4].tolist()} not finite and positive")]
    return []


def _per_tensor_activation(q: QdqNode) -> list[Violation]:
    if q.on_constant or q.scale is None or q.scale.size <= 1:
        return []
    return [Violation("activation_per_tensor", q.name,
                      f"{q.scale.size} scales on an activation; TensorRT takes one scale per activation tensor")]


def _channel_count(q: QdqNode) -> list[Violation]:
    if q.scale is None or q.scale.size <= 1 or q.shape is None:
        return []
    axis = q.axis % len(q.shape)
    if q.block_size > 0:
        expected = tuple(-(-n // q.block_size) if i == axis else n for i, n in enumerate(q.shape))
        found = tuple(q.scale.shape)
    else:
        expected, found = (q.shape[axis],), (q.scale.size,)
    if found != expected:
        return [Violation("channel_count", q.name,
                          f"scale of shape {found} for a tensor of shape {q.shape} along axis {axis}; "
                          f"expected {expected}")]
    return []


def _weight_axis(graph: _Graph, q: QdqNode) -> list[Violation]:
    """Per-channel weight scales must run along the output channels of the layer they feed."""
    if q.node.op_type != "DequantizeLinear" or q.block_size > 0 or q.scale is None or q.scale.size <= 1:
        return []
    if q.shape is None:
        return []
    violations = []
    for layer in graph.consumers.get(q.node.output[0], []):
        slot = WEIGHT_INPUT.get(layer.op_type)
        if slot is None or len(layer.input) <= slot or layer.input[slot] != q.node.output[0]:
            continue
        expected = _output_channel_axis(layer, len(q.shape))
        if q.axis % len(q.shape) != expected:
            violations.append(Violation("weight_axis", q.name,
                                        f"axis {q.axis} for the weight of {layer.op_type} {graph.name(layer)}; "
                                        f"its output channels are axis {expected}"))
    return violations


def _output_channel_axis(layer: "NodeProto", rank: int) -> int:
    """Conv: 0 (C_out × C_in/g × k…); ConvTranspose: 1 (C_in × C_out/g × k…); MatMul: the last
    axis (K × N); Gemm: 0 with transB=1 (N × K), else 1."""
    if layer.op_type == "Conv":
        return 0
    if layer.op_type == "ConvTranspose":
        return 1
    if layer.op_type == "Gemm":
        trans_b = next((a.i for a in layer.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return rank - 1


def _pairs(graph: _Graph) -> list[Violation]:
    violations = []
    for node in graph.nodes:
        if node.op_type != "QuantizeLinear":
            continue
        output = node.output[0]
        consumers = [c.op_type for c in graph.consumers.get(output, [])]
        if output in graph.graph_outputs or not consumers or any(op != "DequantizeLinear" for op in consumers):
            found = sorted(set(consumers)) + (["graph output"] if output in graph.graph_outputs else [])
            violations.append(Violation("qdq_pair", graph.name(node),
                                        f"QuantizeLinear feeds {found or 'nothing'}; it must feed DequantizeLinear"))
    return violations


def _operators(graph: _Graph) -> list[Violation]:
    violations = []
    for node in graph.nodes:
        if node.op_type in INTEGER_OPS or node.op_type.startswith("QLinear"):
            violations.append(Violation("integer_op", graph.name(node),
                                        f"{node.op_type} is an integer-only operator; use Q/DQ around float ops"))
        elif node.domain not in ONNX_DOMAINS:
            violations.append(Violation("custom_domain", graph.name(node),
                                        f"{node.domain}.{node.op_type} is outside the ONNX domain"))
    return violations
