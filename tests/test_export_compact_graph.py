"""The compacting pass of the ONNX writer: short names, merged constants and dropped default
attributes change the bytes of the file, never what it computes (checked with ONNX Runtime)."""

from __future__ import annotations

from itertools import islice

import numpy as np
import pytest
import torch

from compress.export.compact_graph import compact_graph, short_names
from compress.export.onnx_qdq import float_onnx
from compress.models.spec import build_model

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _run(proto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def test_short_names_are_shortest_first_and_skip_taken_names() -> None:
    names = list(islice(short_names({"1", "a"}), 70))
    assert len(set(names)) == 70 and "1" not in names and "a" not in names
    assert [len(n) for n in names] == sorted(len(n) for n in names)
    assert names[:2] == ["0", "2"] and len(names[59]) == 1 and len(names[60]) == 2


def test_compacting_keeps_what_the_graph_computes_and_the_names_users_see() -> None:
    model = build_model("builtin:mnist-cnn")
    x = torch.linspace(0, 1, 3 * 28 * 28).reshape(3, 1, 28, 28)
    proto = float_onnx(model, (x[:1],))
    before = _run(proto, x.numpy())
    size = proto.ByteSize()
    keep = ["head.weight"]
    compact_graph(proto, keep=keep)
    onnx.checker.check_model(proto)
    np.testing.assert_array_equal(_run(proto, x.numpy()), before)
    assert [v.name for v in proto.graph.input] == ["input"] and [v.name for v in proto.graph.output] == ["output"]
    tensors = {t for n in proto.graph.node for t in [*n.input, *n.output]} | {i.name for i in proto.graph.initializer}
    assert "head.weight" in tensors
    assert all(len(t) <= 2 for t in tensors - {"input", "output", *keep}), sorted(tensors)
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert convs and all(a.name not in ("dilations", "strides") for n in convs for a in n.attribute)
    assert all(not n.name for n in proto.graph.node) and not proto.producer_name and proto.graph.name == "g"
    assert proto.ByteSize() < size - 1000  # torch's path names alone were kilobytes


def test_equal_initializers_become_one() -> None:
    from onnx import TensorProto, helper, numpy_helper

    scale = np.array([0.5, 2.0], dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Mul", ["input", "first"], ["mid"]), helper.make_node("Mul", ["mid", "second"], ["output"])],
        "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(scale, "first"), numpy_helper.from_array(scale.copy(), "second")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    compact_graph(proto)
    assert len(proto.graph.initializer) == 1
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"input": np.ones(2, np.float32)})[0], scale * scale)
