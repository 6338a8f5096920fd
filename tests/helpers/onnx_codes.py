"""A quantized layer's weight codes and scales read back from an exported ONNX file, whatever form
they are stored in: the tensor ``<layer>.weight`` is the layer's integer codes, either an
initializer (INT8, INT4) or computed from packed bytes by a decoding graph, which these helpers
evaluate with ONNX's reference evaluator (plain numpy, not ONNX Runtime)."""

from __future__ import annotations

import numpy as np


def _producers(graph) -> dict:
    return {out: node for node in graph.node for out in node.output}


def _ancestors(graph, name: str) -> list:
    """The nodes ``name`` is computed from, in graph order."""
    producers, needed, stack = _producers(graph), set(), [name]
    while stack:
        node = producers.get(stack.pop())
        if node is not None and id(node) not in needed:
            needed.add(id(node))
            stack.extend(node.input)
    return [node for node in graph.node if id(node) in needed]


def layer_codes(proto, layer: str) -> np.ndarray:
    """The integer codes (int64) of ``layer``'s weight as the file holds them."""
    from onnx import TensorProto, helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    name = f"{layer}.weight"
    stored = {init.name: init for init in proto.graph.initializer}
    if name in stored:
        return numpy_helper.to_array(stored[name]).astype(np.int64)
    graph = helper.make_graph(_ancestors(proto.graph, name), "codes", [],
                              [helper.make_tensor_value_info(name, TensorProto.INT8, None)], list(proto.graph.initializer))
    model = helper.make_model(graph, opset_imports=list(proto.opset_import))
    return ReferenceEvaluator(model).run(None, {})[0].astype(np.int64)


def layer_scales(proto, layer: str) -> np.ndarray:
    """The per-channel scales (flat) applied to ``layer``'s codes: DequantizeLinear's, or the Mul's
    after Cast(to FLOAT) (the ``fold`` form); a Cast widening INT4 codes is looked through."""
    from onnx import numpy_helper

    stored = {init.name: init for init in proto.graph.initializer}
    readers = {}
    for node in proto.graph.node:
        for tensor in node.input:
            readers.setdefault(tensor, []).append(node)
    tensor = f"{layer}.weight"
    while True:
        node = readers[tensor][0]
        if node.op_type == "DequantizeLinear":
            return numpy_helper.to_array(stored[node.input[1]]).reshape(-1)
        if node.op_type == "Mul":
            other = node.input[1] if node.input[0] == tensor else node.input[0]
            return numpy_helper.to_array(stored[other]).reshape(-1)
        tensor = node.output[0]  # a Cast


def code_storage(proto, layer: str):
    """The initializer ``layer``'s codes are stored in: ``<layer>.weight`` itself, or the largest
    initializer its decoding graph reads (the packed stream, shared by the layers of one width)."""
    stored = {init.name: init for init in proto.graph.initializer}
    name = f"{layer}.weight"
    if name in stored:
        return stored[name]
    read = {tensor for node in _ancestors(proto.graph, name) for tensor in node.input if tensor in stored}
    return max((stored[tensor] for tensor in read), key=lambda init: len(init.raw_data))
