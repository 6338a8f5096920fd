"""The ONNX Runtime CPU latency harness: orders models whose cost differs by design, reports at
least 30 runs per model and batch size, and round-trips its result."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compress.errors import InputError
from compress.backends.ort.latency import MIN_RUNS, LatencyResult, LatencySpec, measure_latency, summarize

WIDTH = 192


def chain(num_matmuls: int, fixed_batch: int | None = None) -> onnx.ModelProto:
    """x (batch × WIDTH) through ``num_matmuls`` WIDTH × WIDTH matmuls: cost ∝ num_matmuls."""
    rng = np.random.default_rng(num_matmuls)
    inits, nodes, current = [], [], "x"
    for i in range(num_matmuls):
        weight = (rng.standard_normal((WIDTH, WIDTH)) / np.sqrt(WIDTH)).astype(np.float32)
        inits.append(numpy_helper.from_array(weight, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [current, f"w{i}"], [f"h{i}"]))
        current = f"h{i}"
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    batch = fixed_batch or "batch"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, WIDTH])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, WIDTH])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_orders_cheap_and_costly_models_with_enough_runs() -> None:
    spec = LatencySpec(batch_sizes=(1, 16), warmup=3, runs=MIN_RUNS)
    result = measure_latency({"one": chain(1), "eight": chain(8)}, spec)
    assert len(result.measurements) == 4
    for batch in spec.batch_sizes:
        one, eight = result.get("one", batch), result.get("eight", batch)
        assert one.runs == eight.runs == MIN_RUNS
        assert one.median_ms < eight.median_ms, (batch, one, eight)
        assert one.min_ms <= one.median_ms <= one.p90_ms
    assert result.get("eight", 16).median_ms > 2 * result.get("one", 16).median_ms


def test_result_round_trips_through_dict() -> None:
    result = measure_latency({"one": chain(1)}, LatencySpec(warmup=0))
    assert LatencyResult.from_dict(result.to_dict()) == result


def test_given_inputs_fix_the_batch_size() -> None:
    feed = {"x": np.ones((4, WIDTH), np.float32)}
    result = measure_latency({"one": chain(1), "two": chain(2)}, LatencySpec(batch_sizes=(1, 4), warmup=0),
                             feeds={"two": feed})
    assert sorted((m.model, m.batch_size) for m in result.measurements) == [("one", 1), ("one", 4), ("two", 4)]
    with pytest.raises(InputError, match="leading dimensions"):
        measure_latency({"two": chain(2)}, LatencySpec(batch_sizes=(1,)), feeds={"two": feed})


def test_summary_matches_order_statistics() -> None:
    times = list(range(1, 101))[::-1]  # 100 … 1
    assert summarize(times) == (50.5, np.percentile(np.arange(1, 101), 90), 1.0)
    assert summarize(times)[1] == pytest.approx(90.1)


@pytest.mark.parametrize("kwargs, message", [
    ({"runs": 10}, "at least 30"),
    ({"batch_sizes": (0,)}, "positive"),
    ({"graph_optimization": "max"}, "not one of"),
])
def test_bad_specs_are_user_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        LatencySpec(**kwargs)


def test_fixed_batch_dimension_cannot_be_resized() -> None:
    with pytest.raises(InputError, match="fixed batch dimension 1"):
        measure_latency({"fixed": chain(1, fixed_batch=1)}, LatencySpec(batch_sizes=(8,), warmup=0))


def test_unloadable_model_is_a_user_error(tmp_path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    with pytest.raises(InputError, match="cannot load model bad"):
        measure_latency({"bad": tmp_path / "bad.onnx"})
