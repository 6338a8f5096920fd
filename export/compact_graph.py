"""An exported ONNX graph written compactly, so that a small model's file is its weights and not
its names.

torch.onnx and the Q/DQ editor name every tensor by its path (``/block/pw/pw.0/Conv_output_0/
block.pw.0.output_quantizer/dq``), write every attribute, defaults included, and each name is
written once where it is made and once per reader; on builtin:mnist-cnn that was a third of the
file. ``compact_graph`` rewrites the graph in place:

- equal initializers (same type, shape and bytes: a scale written for two layers, the decoding
  graphs' constants) become one;
- every tensor other than the graph's inputs, outputs and the ``keep`` names gets a generated
  name of 1-2 characters, the most read tensors the shortest (``short_names``);
- attributes equal to their default are dropped: the schema's default, or for ``dilations`` and
  ``strides`` all ones and for ``pads`` and ``output_padding`` all zeros, which the operator
  specification implies when they are absent (Conv, ConvTranspose, the pooling ops);
- doc strings, node names, the producer's name and version are cleared and the graph is named
  ``g``: no runtime reads them. Where a node must be named to a user (ORT's fusion report:
  the Q/DQ left unfused, the layers left in float), ``node_labels`` names it from the graph's
  structure and the parameter names the file keeps (``stem.0.input_quantizer/Q``,
  ``conv.0.weight/DQ``, ``head/Gemm``), so the file carries no name for it (on
  builtin:mnist-cnn the names were 0.6-1.2 kB, 5% of the file).

The nodes, their order and every value stay as they were, so the model computes bit for bit
what it computed before. Graphs with subgraphs (If, Loop, Scan) are left as they are.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import count, product
from typing import TYPE_CHECKING

from .qdq_graph import GRID_PRESERVING

if TYPE_CHECKING:
    import onnx

ALPHABET = string.digits + string.ascii_letters
GRAPH_NAME = "g"  # the checker requires a non-empty graph name
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "MatMulInteger", "MatMulNBits")
CODE_OPS = ("Cast", "Reshape", "DequantizeLinear", "Mul", "Transpose")  # parameter → what a layer reads
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
PASS_OPS = (*QDQ_OPS, *GRID_PRESERVING)  # ops an activation crosses on its grid between two layers
PARAMETER_SUFFIXES = (".weight", ".bias")
IMPLIED = {"dilations": 1, "strides": 1, "pads": 0, "output_padding": 0}  # every element, when absent


def short_names(taken: set[str]) -> Iterator[str]:
    """Names over [0-9A-Za-z], shortest first (62 of one character, then 3,844 of two, …),
    skipping those in ``taken``."""
    for length in count(1):
        for letters in product(ALPHABET, repeat=length):
            name = "".join(letters)
            if name not in taken:
                yield name


def compact_graph(model: "onnx.ModelProto", keep: Iterable[str] = ()) -> None:
    """Merge equal initializers, give short names to every tensor but the graph's inputs, outputs
    and ``keep``, drop default attributes, clear doc strings, node names and the producer
    (module docstring)."""
    graph = model.graph
    if any(a.g.node or a.graphs for node in graph.node for a in node.attribute):
        return
    fixed = {v.name for v in [*graph.input, *graph.output]} | set(keep)
    _rename(graph, _merged_initializers(graph, fixed))
    uses = Counter(name for node in graph.node for name in [*node.input, *node.output] if name)
    uses.update(init.name for init in graph.initializer)
    ordered = sorted((name for name in uses if name not in fixed), key=lambda name: -uses[name])
    _rename(graph, dict(zip(ordered, short_names(fixed))))
    graph.doc_string = model.doc_string = model.producer_name = model.producer_version = ""
    graph.name = GRAPH_NAME
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    for node in graph.node:
        node.doc_string = node.name = ""
        _drop_default_attributes(node, opset)
    for init in graph.initializer:
        init.doc_string = ""


def _merged_initializers(graph: "onnx.GraphProto", fixed: set[str]) -> dict[str, str]:
    """Remove initializers equal to an earlier one (a kept name wins); returns removed → kept."""
    first: dict[bytes, str] = {}
    replaced: dict[str, str] = {}
    for init in sorted(graph.initializer, key=lambda t: t.name not in fixed):  # kept names first
        content = _copy(init)
        content.name = content.doc_string = ""
        key = content.SerializeToString()
        if key in first and init.name not in fixed:
            replaced[init.name] = first[key]
        else:
            first.setdefault(key, init.name)
    kept = [_copy(init) for init in graph.initializer if init.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return replaced


def _drop_default_attributes(node: "onnx.NodeProto", opset: int) -> None:
    """Remove the attributes of ``node`` (a standard op) that equal what their absence means."""
    from onnx import defs, helper

    if node.domain not in ("", "ai.onnx") or not defs.has(node.op_type):
        return
    schema = defs.get_schema(node.op_type, opset)
    kept = []
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        declared = schema.attributes.get(attribute.name)
        default = declared.default_value if declared is not None else None
        if default is not None and default.name and helper.get_attribute_value(default) == value:
            continue
        if attribute.name in IMPLIED and declared is not None and isinstance(value, list) \
                and all(v == IMPLIED[attribute.name] for v in value):
            continue
        kept.append(attribute)
    if len(kept) < len(node.attribute):
        del node.attribute[:]
        node.attribute.extend(kept)


def _copy(tensor: "onnx.TensorProto") -> "onnx.TensorProto":
    copy = type(tensor)()
    copy.CopyFrom(tensor)
    return copy


def _rename(graph: "onnx.GraphProto", names: dict[str, str]) -> None:
    """Apply ``names`` (old → new) to initializers, node inputs and outputs, and value infos."""
    for init in graph.initializer:
        init.name = names.get(init.name, init.name)
    for node in graph.node:
        for values in (node.input, node.output):
            for index, name in enumerate(values):
                values[index] = names.get(name, name)
    for info in graph.value_info:
        info.name = names.get(info.name, info.name)


def node_labels(graph: "onnx.GraphProto") -> dict[str, str]:
    """A name for each node a user may be told about, keyed by its first output tensor (which ONNX
    Runtime keeps on the nodes it leaves as they are), built from the parameter names the file
    keeps: a layer op reading ``<layer>.weight`` → ``<layer>/<op>``; a Q/DQ of a parameter →
    ``<parameter>/Q|DQ``; of an activation → ``<layer>.output_quantizer/Q|DQ`` for the nearest
    layer before it (across Q/DQ and grid-preserving ops), else ``<layer>.input_quantizer/Q|DQ``
    for the layer it feeds; a label met again gets ``#2``, ``#3``, … in node order."""
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    layers = {id(node): parameter.rsplit(".", 1)[0] for node in graph.node if node.op_type in LAYER_OPS
              and len(node.input) > 1 and (parameter := _parameter(node.input[1], producer))}
    labels: dict[str, str] = {}
    seen: Counter[str] = Counter()
    for node in graph.node:
        label = _label(node, layers, producer, consumers)
        if label and node.output:
            seen[label] += 1
            labels[node.output[0]] = label if seen[label] == 1 else f"{label}#{seen[label]}"
    return labels


def _label(node: "onnx.NodeProto", layers: dict[int, str], producer: dict, consumers: dict) -> str | None:
    if id(node) in layers:
        return f"{layers[id(node)]}/{node.op_type}"
    if node.op_type not in QDQ_OPS:
        return None
    kind = "Q" if node.op_type == "QuantizeLinear" else "DQ"
    parameter = _parameter(node.input[0], producer)
    if parameter:
        return f"{parameter}/{kind}"
    before, after = _layer_before(node.input[0], layers, producer), _layer_after(node.output[0], layers, consumers)
    if before or after:
        return f"{before}.output_quantizer/{kind}" if before else f"{after}.input_quantizer/{kind}"
    return None


def _parameter(tensor: str, producer: dict) -> str | None:
    """The kept parameter (``<layer>.weight`` / ``.bias``) ``tensor`` is decoded or dequantized from."""
    while not tensor.endswith(PARAMETER_SUFFIXES):
        node = producer.get(tensor)
        if node is None or node.op_type not in CODE_OPS:
            return None
        tensor = node.input[0]
    return tensor


def _layer_before(tensor: str, layers: dict[int, str], producer: dict) -> str | None:
    node = producer.get(tensor)
    while node is not None and id(node) not in layers and node.op_type in PASS_OPS:
        node = producer.get(node.input[0])
    return None if node is None else layers.get(id(node))


def _layer_after(tensor: str, layers: dict[int, str], consumers: dict) -> str | None:
    while True:
        users = consumers.get(tensor, [])
        layer = next((layers[id(u)] for u in users if id(u) in layers and u.input[0] == tensor), None)
        if layer or len(users) != 1 or users[0].op_type not in PASS_OPS:
            return layer
        tensor = users[0].output[0]
