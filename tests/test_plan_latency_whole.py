"""Whole plans as ONNX Runtime runs them (``compress.backends.ort.plan_latency``): each candidate is
compressed by apply's code and written by the real exporter, int8 layers with uint8 activations
that ORT fuses into integer kernels, weight-only layers folded to float; ``ratios`` returns one
latency ratio per plan and batch size. Structure only: no timing is asserted."""

import numpy as np
import pytest
import torch
from torch import nn

from compress.backends.ort.plan_latency import OrtPlanLatency
from compress.data.source import TensorData
from compress.vocab.options import LayerOption


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(torch.relu(self.b(torch.relu(self.a(x)))), 1))


def _setting():
    torch.manual_seed(0)
    data = TensorData("random", (torch.randn(16, 3, 6, 6),), torch.randint(0, 4, (16,)))
    return Net().eval(), data


def _ops(path, tmp_path) -> list[str]:
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]


def test_an_int8_plan_is_exported_with_uint8_activations_that_ort_fuses(tmp_path) -> None:
    import onnx
    from onnx import numpy_helper

    model, data = _setting()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    int8 = {"a": LayerOption(8, act_bits=8), "b": LayerOption(4, act_bits=8), "head": LayerOption(8)}
    path = OrtPlanLatency(model, data)._plan_file(int8, (data.inputs[0][:1],), tmp_path / "plan.onnx")
    graph = onnx.load(path).graph
    quantized = {node.input[2] for node in graph.node if node.op_type == "QuantizeLinear"}
    zero_points = [numpy_helper.to_array(t) for t in graph.initializer if t.name in quantized]
    assert zero_points and all(z.dtype == np.uint8 for z in zero_points)
    assert _ops(path, tmp_path).count("QLinearConv") == 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a copy was compressed


def test_a_weight_only_plan_runs_float_kernels(tmp_path) -> None:
    model, data = _setting()
    weight_only = {"a": LayerOption(8), "b": LayerOption(4), "head": LayerOption(8)}
    ops = _ops(OrtPlanLatency(model, data)._plan_file(weight_only, (data.inputs[0][:1],), tmp_path / "w.onnx"),
               tmp_path)
    assert not {"QLinearConv", "DequantizeLinear", "QuantizeLinear"} & set(ops), ops


@pytest.mark.parametrize("batches", [(1, 4)])
def test_ratios_are_one_per_plan_and_batch(batches) -> None:
    model, data = _setting()
    plans = [{"a": LayerOption(8), "b": LayerOption(8), "head": LayerOption(None)},
             {"a": LayerOption(8, act_bits=8), "b": LayerOption(8, act_bits=8), "head": LayerOption(8)}]
    ratios = OrtPlanLatency(model, data, batches, runs=30).ratios(plans)
    assert len(ratios) == 2 and all(set(r) == set(batches) and all(v > 0 for v in r.values()) for r in ratios)
