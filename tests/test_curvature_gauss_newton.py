"""Gauss-Newton traces from output-space probes against dense float64 Gauss-Newton matrices."""

import pytest
import torch
from torch.func import functional_call, jacrev

from compress.curvature.estimate import CurvatureSpec, estimate_curvature
from compress.curvature.intervals import Z95
from compress.curvature.params import ParamLayout
from compress.curvature.trace import TraceSpec
from compress.testing.tiny import tiny_data, tiny_mlp, trained


def dense_ggn(model, inputs: torch.Tensor, loss: str) -> torch.Tensor:
    """(1/N) Σ_n J_nᵀ H_n J_n in float64, written out: H_n = I (distill) or diag(p) − ppᵀ (ce)."""
    model = model.double()
    layout = ParamLayout.of(model)
    named = dict(model.named_parameters())
    flat = layout.flatten({n: named[n].detach() for n in layout.names})
    outputs = lambda v: functional_call(model, layout.unflatten(v), (inputs.double(),))
    jacobian = jacrev(outputs)(flat)  # N x C x D
    if loss == "distill":
        hessians = torch.eye(jacobian.shape[1], dtype=torch.float64).expand(len(inputs), -1, -1)
    else:
        p = torch.softmax(outputs(flat), dim=1)
        hessians = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    return torch.einsum("ncd,nce,nef->df", jacobian, hessians, jacobian) / len(inputs)


@pytest.mark.parametrize("loss", ["ce", "distill"])
def test_layer_traces_match_dense_gauss_newton(loss: str) -> None:
    data = tiny_data("mlp", num_samples=64)
    model = trained(tiny_mlp(), data)
    ggn = dense_ggn(trained(tiny_mlp(), data), data.inputs[0], loss)
    layout = ParamLayout.of(model)
    exact = {name: float(ggn.diagonal()[a:b].sum()) for name, (a, b) in layout.layers.items()}
    covered = []
    for seed in range(10):
        result = estimate_curvature(model, data, CurvatureSpec(loss=loss, method="gauss-newton", slq_runs=0,
                                                               batch_size=16, trace=TraceSpec(seed=seed)))
        assert result.method.startswith("gauss-newton") and result.converged
        for name, layer in result.layers.items():
            assert abs(layer.trace - exact[name]) <= 0.1 * abs(exact[name]), (name, layer.trace, exact[name])
            covered.append(abs(layer.trace - exact[name]) <= Z95 * layer.trace_stderr)
    assert sum(covered) / len(covered) >= 0.9


def test_distill_default_is_gauss_newton_and_equals_the_hessian() -> None:
    data = tiny_data("mlp", num_samples=64)
    model = trained(tiny_mlp(), data)
    hessian = estimate_curvature(model, data, CurvatureSpec(loss="distill", exact=True))
    ours = estimate_curvature(model, data, CurvatureSpec(loss="distill", slq_runs=1))
    assert ours.method.startswith("gauss-newton")
    for name, layer in ours.layers.items():
        assert abs(layer.trace - hessian.layers[name].trace) <= 0.05 * abs(hessian.layers[name].trace)
