"""Latency budgets: single-layer ONNX graphs compute the layer and fuse to integer kernels; the
measured table is cached and a latency_ms plan meets its budget."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from compress.plan.layer_onnx import layer_graph
from compress.plan.latency_table import latency_table, variant
from compress.plan.make import PlanEvidence, PlanSpec, layer_options, make_plan
from compress.plan.sensitivity import LayerOption
from tests.helpers.curvature import curvature_for

LAYERS = [(nn.Conv2d(4, 8, 3, padding=1), (2, 4, 6, 6)), (nn.Conv2d(8, 8, 3, groups=8, padding=1), (2, 8, 5, 5)),
          (nn.Linear(16, 12), (2, 3, 16))]


def optimized_ops(graph, tmp_path) -> list[str]:
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]


@pytest.mark.parametrize("index", range(len(LAYERS)))
def test_layer_graphs_compute_the_layer_and_fuse_when_int8(index: int, tmp_path) -> None:
    import onnxruntime as ort

    torch.manual_seed(index)
    module, shape = LAYERS[index]
    x = torch.randn(shape)
    session = ort.InferenceSession(layer_graph(module, shape, "fp32").SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], module(x).detach().numpy(), atol=1e-5)
    weight_only = ort.InferenceSession(layer_graph(module, shape, "weight-only").SerializeToString(),
                                       providers=["CPUExecutionProvider"])
    reference = module(x).detach().numpy()
    error = np.abs(weight_only.run(None, {"x": x.numpy()})[0] - reference).max()
    assert 0 < error < 0.02 * np.abs(reference).max()  # int8 weights, float inputs
    ops = optimized_ops(layer_graph(module, shape, "int8"), tmp_path)
    assert {"QLinearConv", "QLinearMatMul", "QGemm", "MatMulIntegerToFloat"} & set(ops), ops
    pruned = ort.InferenceSession(layer_graph(module, shape, "fp32", sparsity=0.5).SerializeToString(),
                                  providers=["CPUExecutionProvider"])
    kept = pruned.run(None, {"x": x[:, :4].numpy() if index == 1 else x.numpy()})[0]
    assert kept.shape[1 if index < 2 else -1] == module.weight.shape[0] // 2


def test_variants_follow_what_the_backend_runs() -> None:
    assert variant(LayerOption(4)) == "weight-only"  # DQ on every call, float kernel
    assert variant(LayerOption(None)) == "fp32"
    assert variant(LayerOption(4, act_bits=8)) == "int8"
    assert variant(LayerOption(None, act_bits=8)) == "fp32"
    assert variant(LayerOption(8, 0.5, "unstructured", 8)) == "int8"  # no sparse kernels
    assert variant(LayerOption(8, 0.5, "channel", 8)) == "int8+ch0.5"


def test_latency_table_is_cached_and_a_latency_budget_holds(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(16 * 8 * 8, 10))
    spec = PlanSpec(budgets={}, bits=(8, None), sparsities=(0.0, 0.5), patterns=("channel",))
    inputs = (torch.randn(1, 3, 8, 8),)
    table = latency_table(model, inputs, layer_options(model, spec), batch_size=4)
    assert set(table.median_ms["2"]) == {"fp32", "fp32+ch0.5", "weight-only", "weight-only+ch0.5"}
    assert latency_table(model, inputs, layer_options(model, spec), batch_size=4) == table  # from the cache
    assert len(list((tmp_path / "latency").glob("*.json"))) == 1
    curvature = curvature_for(model, {"0": 1.0, "2": 1.0, "5": 1.0})
    total = sum(table.median_ms[n]["fp32"] for n in ("0", "2", "5"))
    fastest = sum(min(table.median_ms[n].values()) for n in ("0", "2", "5"))
    budget = (total + fastest) / 2
    plan = make_plan(model, curvature, replace(spec, budgets={"latency_ms": budget}), PlanEvidence(latency=table))
    assert plan.totals["latency_ms"] <= budget + 1e-12
    assert sum(layer.latency_ms for layer in plan.layers.values()) == pytest.approx(plan.totals["latency_ms"])
