"""Latency budgets: each layer variant is written by the real exporter (quantized as apply
quantizes), computes the narrowed layer, fuses to integer kernels when int8; the measured table
is cached and a latency_ms plan meets its budget."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from compress.backends.ort.latency_table import latency_table
from compress.backends.ort.layer_variants import export_variant, narrowed_layer
from compress.plan.make import PlanEvidence, PlanSpec, layer_options, make_plan
from compress.vocab.costs import latency_variant
from compress.vocab.options import LayerOption
from tests.helpers.curvature import curvature_for

LAYERS = [(nn.Conv2d(4, 8, 3, padding=1), (2, 4, 6, 6)), (nn.Conv2d(8, 8, 3, groups=8, padding=1), (2, 8, 5, 5)),
          (nn.Linear(16, 12), (2, 3, 16))]


def optimized_ops(path, tmp_path) -> list[str]:
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]


def run(path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.parametrize("index", range(len(LAYERS)))
def test_variants_are_exported_by_the_exporter_compute_the_layer_and_fuse_when_int8(index: int, tmp_path) -> None:
    torch.manual_seed(index)
    module, shape = LAYERS[index]
    x = torch.randn(shape)
    reference = torch.relu(module(x)).detach().numpy()
    dense = export_variant(narrowed_layer(module, None, None), LayerOption(None), shape, tmp_path / "fp32.onnx")
    np.testing.assert_allclose(run(dense, x), reference, atol=1e-5)
    weight_only = export_variant(narrowed_layer(module, None, None), LayerOption(8), shape, tmp_path / "w8.onnx")
    error = np.abs(run(weight_only, x) - reference).max()
    assert 0 < error < 0.05 * np.abs(reference).max(), error  # int8 weights (token-wise linears: int8 inputs too)
    int8 = export_variant(narrowed_layer(module, None, None), LayerOption(8, act_bits=8), shape, tmp_path / "a8.onnx")
    ops = optimized_ops(int8, tmp_path)
    assert {"QLinearConv", "QLinearMatMul", "QGemm", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"} & set(ops), ops
    rows = torch.arange(0, module.weight.shape[0], 2)
    pruned = export_variant(narrowed_layer(module, rows, None), LayerOption(None), shape, tmp_path / "half.onnx")
    narrow_x = x[:, rows] if index == 1 else x
    out = run(pruned, narrow_x)
    expected = torch.relu(module(x)).detach()[:, rows] if index < 2 else torch.relu(module(x)).detach()[..., rows]
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-5)


def test_variants_follow_what_the_backend_runs() -> None:
    assert latency_variant(LayerOption(4)) == "weight-only"  # DQ on every call, float kernel
    assert latency_variant(LayerOption(None)) == "fp32"
    assert latency_variant(LayerOption(4, act_bits=8)) == "int8"
    assert latency_variant(LayerOption(None, act_bits=8)) == "fp32"
    assert latency_variant(LayerOption(8, 0.5, "unstructured", 8)) == "int8"  # no sparse kernels
    assert latency_variant(LayerOption(8, 0.5, "channel", 8)) == "int8+ch0.5"
    assert latency_variant(LayerOption(8, input_sparsity=0.5)) == "weight-only+in0.5"


def test_latency_table_is_cached_and_a_latency_budget_holds(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(16 * 8 * 8, 10))
    spec = PlanSpec(budgets={}, bits=(8, None), sparsities=(0.0, 0.5), patterns=("channel",))
    inputs = (torch.randn(1, 3, 8, 8),)
    table = latency_table(model, inputs, layer_options(model, spec), batch_size=4)
    # weight-only layers are exported in the fold form, which ORT runs as the float layer: timed once, as fp32
    assert set(table.median_ms["2"]) == {"fp32", "fp32+ch0.5", "fp32+in0.5", "fp32+ch0.5+in0.5"}
    costs = table.costs().milliseconds["2"]
    assert {k: costs[k.replace("weight-only", "fp32")] for k in costs if k.startswith("weight-only")} == {
        k.replace("fp32", "weight-only"): v for k, v in table.median_ms["2"].items()}
    assert latency_table(model, inputs, layer_options(model, spec), batch_size=4) == table  # from the cache
    assert len(list((tmp_path / "latency").glob("*.json"))) == 1
    curvature = curvature_for(model, {"0": 1.0, "2": 1.0, "5": 1.0})
    total = sum(table.median_ms[n]["fp32"] for n in ("0", "2", "5"))
    fastest = sum(min(table.median_ms[n].values()) for n in ("0", "2", "5"))
    budget = (total + fastest) / 2
    plan = make_plan(model, curvature, replace(spec, budgets={"latency_ms": budget}), PlanEvidence(latency=table.costs()))
    assert plan.totals["latency_ms"] <= budget + 1e-12
    assert sum(layer.latency_ms for layer in plan.layers.values()) == pytest.approx(plan.totals["latency_ms"])
