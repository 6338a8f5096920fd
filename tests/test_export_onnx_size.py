"""ONNX for ONNX Runtime at its real size: for every fast example recipe, the weights the .onnx
file holds (its initializers) are within 15% of the size ``evaluate`` reports, the decoding of
packed codes is folded away by ORT (which still fuses what it fused before), and parity holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from compress.data.spec import load_data
from compress.evaluation import model_size
from compress.export.onnx_qdq import export_onnx
from compress.backends.ort.fusion import check_fusion
from compress.backends.ort.parity import measure_parity
from tests.helpers.applied_recipes import RECIPES, apply_recipe

onnx = pytest.importorskip("onnx")
SIZE_TOLERANCE = 0.15
DECODING_OPS = ("BitShift", "BitwiseAnd", "CumSum", "Gather", "ReduceSum", "Cast", "Slice")


@pytest.fixture(scope="module")
def heldout():
    return load_data("builtin:mnist5k", "heldout", "heldout")


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_onnx_weights_have_the_reported_size(recipe: Path, tmp_path: Path, heldout) -> None:
    applied = apply_recipe(recipe)
    path = export_onnx(applied.model, (heldout.inputs[0][:1],), tmp_path / "model.onnx", "ort")
    proto = onnx.load(str(path))
    weights = sum(len(init.raw_data) for init in proto.graph.initializer)
    reported = model_size(applied.model)[1] * 1e6
    graph = path.stat().st_size - weights
    assert abs(weights / reported - 1) <= SIZE_TOLERANCE, (
        f"initializers {weights} bytes vs {reported:.0f} reported ({weights / reported:.3f}x); "
        f"the rest of the {path.stat().st_size}-byte file is graph: {graph} bytes")
    stored = {init.name: init.data_type for init in proto.graph.initializer}
    for name, record in applied.quant.layers.items():  # no ONNX type holds 3-bit codes: packed bytes
        if record.settings.weight_bits not in (4, 8):
            assert stored[f"{name}.weight"] == onnx.TensorProto.UINT8, name
    parity = measure_parity(applied.model, path, [batch.inputs for batch in heldout.batches(500)])
    assert parity.max_error_steps <= 1.0, f"max error {parity.max_error_steps:.3f} output steps"
    assert parity.top1_agreement >= 0.999, f"top-1 agreement {parity.top1_agreement:.4f}"
    report = check_fusion(path)
    left = [n.op_type for n in onnx.load(report.optimized).graph.node if n.op_type in DECODING_OPS]
    assert not left, f"ORT left decoding ops in the graph it runs: {left}"
    if all(not record.settings.act_signed for record in applied.quant.layers.values()):
        assert not report.float_layers  # uint8 everywhere: every layer an integer kernel (x86 ORT
        # leaves a signed int8 depthwise conv in float, packed codes or not)
