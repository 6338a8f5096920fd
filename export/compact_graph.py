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
- doc strings are cleared, and the names of nodes other than the Q/DQ and layer ops
  (``NAMED_OPS``: the nodes ORT's fusion report names when they stay unfused or float).

The nodes, their order and every value stay as they were, so the model computes bit for bit
what it computed before. Graphs with subgraphs (If, Loop, Scan) are left as they are.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Iterable, Iterator
from itertools import count, product
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

ALPHABET = string.digits + string.ascii_letters
NAMED_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Conv", "ConvTranspose", "Gemm", "MatMul",
             "MatMulInteger", "MatMulNBits")
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
    and ``keep``, drop default attributes, clear doc strings and node names but those of
    ``NAMED_OPS`` (module docstring)."""
    graph = model.graph
    if any(a.g.node or a.graphs for node in graph.node for a in node.attribute):
        return
    fixed = {v.name for v in [*graph.input, *graph.output]} | set(keep)
    _rename(graph, _merged_initializers(graph, fixed))
    uses = Counter(name for node in graph.node for name in [*node.input, *node.output] if name)
    uses.update(init.name for init in graph.initializer)
    ordered = sorted((name for name in uses if name not in fixed), key=lambda name: -uses[name])
    _rename(graph, dict(zip(ordered, short_names(fixed))))
    graph.doc_string = model.doc_string = ""
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    for node in graph.node:
        node.doc_string = ""
        if node.op_type not in NAMED_OPS:
            node.name = ""
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
