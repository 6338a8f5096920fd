"""Estimated traces, eigenvalues and spectral density against dense float64 Hessians."""

import numpy as np
import pytest
import torch

from compress.curvature.estimate import CurvatureSpec, estimate_curvature
from compress.curvature.result import Curvature
from compress.curvature.trace import TraceSpec
from compress.testing.tiny import tiny_convnet, tiny_data, tiny_mlp, trained

TINY = {"mlp": tiny_mlp, "conv": tiny_convnet}


@pytest.fixture(scope="module", params=list(TINY))
def trained_tiny(request):
    data = tiny_data(request.param, num_samples=96)
    model = trained(TINY[request.param](), data)
    return model, data, estimate_curvature(model, data, CurvatureSpec(exact=True))


def test_every_layer_trace_within_5_percent_of_exact(trained_tiny) -> None:
    model, data, exact = trained_tiny
    estimate = estimate_curvature(model, data, CurvatureSpec())
    floor = 0.01 * abs(exact.trace)
    for name, layer in exact.layers.items():
        error = abs(estimate.layers[name].trace - layer.trace) / max(abs(layer.trace), floor)
        assert error <= 0.05, f"{name}: estimate {estimate.layers[name].trace:.5g} vs exact {layer.trace:.5g}"
        assert estimate.layers[name].trace_stderr > 0 and estimate.layers[name].num_params == layer.num_params
    assert estimate.converged and estimate.num_hvps < 200


def test_top_five_eigenvalues_within_1_percent(trained_tiny) -> None:
    model, data, exact = trained_tiny
    estimate = estimate_curvature(model, data, CurvatureSpec())
    errors = np.abs(np.array(estimate.top_eigenvalues) - exact.top_eigenvalues) / np.abs(exact.top_eigenvalues)
    assert len(estimate.top_eigenvalues) == 5 and errors.max() <= 0.01, errors


def test_spectral_density_moments_match(trained_tiny) -> None:
    model, data, exact = trained_tiny
    estimate = estimate_curvature(model, data, CurvatureSpec(slq_runs=40, slq_steps=30,
                                                             trace=TraceSpec(deflation_steps=30)))
    dim = sum(layer.num_params for layer in exact.layers.values())
    eigenvalues = np.array(exact.density_nodes)
    nodes, weights = np.array(estimate.density_nodes), np.array(estimate.density_weights)
    assert abs(weights.sum() - 1) < 1e-9
    for power in (1, 2):
        expected = np.mean(eigenvalues**power)
        measured = np.sum(weights * nodes**power)
        assert abs(measured - expected) <= 0.15 * abs(expected), (power, measured, expected)
    assert abs(np.sum(weights * nodes) * dim - exact.trace) <= 0.15 * abs(exact.trace)
    assert 0 <= estimate.degeneracy_ratio <= 1 and 0 <= estimate.negative_mass <= 1


def test_plain_hutchinson_needs_more_products(trained_tiny) -> None:
    model, data, _ = trained_tiny
    ours = estimate_curvature(model, data, CurvatureSpec(slq_runs=1))
    plain = estimate_curvature(model, data, CurvatureSpec(slq_runs=0, trace=TraceSpec(deflation_steps=0)))
    assert plain.num_hvps > ours.num_hvps, (plain.num_hvps, ours.num_hvps)


def test_time_budget_stops_with_error_bars() -> None:
    data = tiny_data("conv", num_samples=96)
    model = tiny_convnet()
    result = estimate_curvature(model, data, CurvatureSpec(trace=TraceSpec(max_seconds=0.0, rel_error=1e-6)))
    assert not result.converged and result.num_hvps <= 4
    assert all(np.isfinite(layer.trace_stderr) for layer in result.layers.values())


def test_curvature_round_trips_through_json() -> None:
    import json

    data = tiny_data("mlp")
    result = estimate_curvature(tiny_mlp(), data, CurvatureSpec(exact=True))
    assert Curvature.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_exact_refuses_large_models() -> None:
    from compress.errors import InputError
    from compress.data.source import TensorData

    model = torch.nn.Linear(100, 60)
    data = TensorData("x", (torch.randn(8, 100),), torch.randint(0, 60, (8,)))
    with pytest.raises(InputError, match="exact=True"):
        estimate_curvature(model, data, CurvatureSpec(exact=True))
