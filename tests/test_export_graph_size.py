"""The ONNX graph's predicted bytes (``plan.costs.graph_bytes``) follow the exporter's own rules:
which codes it packs, and the graph's line in the eval table and the report."""

from __future__ import annotations

import numpy as np
import pytest

from compress.plan.costs import NODE_BYTES, graph_bytes, graph_nodes, packed_stream
from compress.report.inputs import ReportInputs, Variant
from compress.report.tables import variants_table
from compress.vocab.options import LayerOption

onnx = pytest.importorskip("onnx")


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_packed_stream_is_what_the_exporter_writes(bits: int, sparsity: float) -> None:
    from compress.export.qdq_graph import GraphEditor
    from compress.quant.weights import weight_code_range

    rng = np.random.default_rng(bits)
    low, high = weight_code_range(bits)
    codes = rng.choice([c for c in range(low, high + 1) if c], size=(64, 72))
    codes[rng.random(codes.shape) < sparsity] = 0
    editor = GraphEditor(onnx.helper.make_graph([], "g", [], []))
    editor.set_codes("layer.weight", codes, bits, compact=True)
    written = next(iter(editor.packed), None)  # (bits, masked) held back to pack, or None: an ONNX integer type
    zeros = float((codes == 0).mean())
    assert packed_stream(LayerOption(bits, zeros)) == written, (zeros, written)


def test_graph_bytes_add_a_decoding_graph_per_packed_stream() -> None:
    dense, packed = LayerOption(8, act_bits=8), LayerOption(3, act_bits=8)
    assert graph_bytes([(dense, True)] * 2) - graph_bytes([(dense, True)]) == NODE_BYTES * graph_nodes(dense, True)
    one, two = graph_bytes([(packed, True)]), graph_bytes([(packed, True)] * 2)
    assert one - graph_bytes([]) > two - one  # the second 3-bit layer shares the first one's decoding graph
    assert graph_nodes(LayerOption(8, rank=4), True) > graph_nodes(LayerOption(8), True)


def test_the_report_shows_the_graph_as_its_own_column() -> None:
    inputs = ReportInputs("m", (Variant("fp32", "accuracy", 0.9, 0.08), Variant("int8", "accuracy", 0.9, 0.02,
                                                                                 graph_bytes=2500)))
    table = variants_table(inputs)
    assert "+ ONNX graph (MB, predicted)" in table.headers
    assert [row[3] for row in table.rows] == ["—", "0.0025"]


def test_a_float_model_has_no_predicted_graph_and_a_quantized_one_has() -> None:
    from compress.evaluation import onnx_graph_bytes
    from compress.models.spec import build_model
    from compress.quant.quantize import quantize_model_
    from compress.quant.records import QuantSettings

    model = build_model("builtin:mnist-cnn")
    assert onnx_graph_bytes(model) is None
    quantize_model_(model, {"head": QuantSettings(weight_bits=8, act_bits=None)}, [])
    layers = [(LayerOption(None), True)] * 4 + [(LayerOption(8), True)]  # four float convs, the weight-only head
    assert onnx_graph_bytes(model) == graph_bytes(layers)
