"""K-FAC / KFLR against dense float64 Gauss-Newton blocks from per-sample Jacobians (torch.func).

Where the Kronecker form is exact (one sample at one position; a last layer under
self-distillation, whose output Hessian is I) KFLR must equal the dense block; where it is not,
its trace must equal the product of the factor traces computed here directly, and differ from the
exact block (the approximation error is measured, not hidden)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from compress.curvature.estimate import CurvatureSpec, estimate_curvature
from compress.curvature.kfac import collect_factors
from compress.curvature.prepare import prepare_operator
from compress.curvature.trace import TraceSpec
from compress.data.source import TensorData
from compress.errors import InputError


def dense_ggn(model: nn.Module, inputs: torch.Tensor, loss: str) -> torch.Tensor:
    """(1/N) Σ_n J_nᵀ H_n J_n over all parameters (named_parameters order), float64."""
    params = {n: p.detach() for n, p in model.named_parameters()}

    def output(p: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, p, (x[None],))[0].flatten()

    jacobians = vmap(jacrev(output), in_dims=(None, 0))(params, inputs)
    jacobian = torch.cat([j.flatten(2) for j in jacobians.values()], dim=2)  # [N, C, D]
    logits = model(inputs).detach().flatten(1)
    if loss == "ce":
        p = torch.softmax(logits, dim=1)
        hessians = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    else:
        hessians = torch.eye(logits.shape[1], dtype=torch.float64).expand(len(inputs), -1, -1)
    return torch.einsum("ncd,nce,nef->df", jacobian, hessians, jacobian) / len(inputs)


def layout_order(out: int, inputs: int) -> torch.Tensor:
    """Index into [vec(W) row-major, b] of every entry of vec([W | b]) (the Kronecker order)."""
    rows = torch.arange(out)[:, None]
    columns = torch.arange(inputs + 1)[None, :]
    return torch.where(columns < inputs, rows * inputs + columns, out * inputs + rows).flatten()


def kflr_factors(model: nn.Module, data: TensorData, loss: str, exact: bool = True, batch_size: int = 16):
    operator = prepare_operator(model, data, loss, batch_size)
    return collect_factors(model, operator.batches, len(data), loss, exact=exact)


def blocks(dense: torch.Tensor, model: nn.Module) -> dict[str, torch.Tensor]:
    """Each Linear / Conv2d layer's block of ``dense``, in Kronecker order."""
    result, offset = {}, 0
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            out, inputs = module.weight.shape[0], module.weight[0].numel()
            size = out * (inputs + 1)
            index = offset + layout_order(out, inputs)
            result[name] = dense[index][:, index]
            offset += size
    return result


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tanh_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double().eval()


@pytest.mark.parametrize("loss", ["ce", "distill"])
def test_kflr_equals_the_gauss_newton_blocks_for_one_sample(loss):
    model = tanh_mlp()
    data = TensorData("one", (torch.randn(1, 5, dtype=torch.float64),), torch.tensor([1]))
    factors = kflr_factors(model, data, loss).factors
    for name, block in blocks(dense_ggn(model, data.inputs[0], loss), model).items():
        torch.testing.assert_close(factors[name].dense(), block, rtol=1e-10, atol=1e-12, msg=name)


def test_kflr_is_exact_for_a_last_layer_under_self_distillation_and_approximate_before_it():
    model = tanh_mlp()
    data = TensorData("many", (torch.randn(40, 5, dtype=torch.float64),), None)
    factors = kflr_factors(model, data, "distill").factors
    exact = blocks(dense_ggn(model, data.inputs[0], "distill"), model)
    torch.testing.assert_close(factors["2"].dense(), exact["2"], rtol=1e-10, atol=1e-12)
    error = abs(factors["0"].trace - float(exact["0"].trace())) / float(exact["0"].trace())
    assert error > 1e-3, f"layer 0 is not Kronecker over many samples, yet K-FAC matched it to {error:.2e}"


def test_kflr_trace_is_the_product_of_mean_factor_traces_with_cross_entropy():
    """One Linear layer: exact block (1/N) Σ B_n ⊗ a_n a_nᵀ, B_n = diag(p_n) − p_n p_nᵀ; KFLR's
    trace is mean(tr B_n)·mean(‖a_n‖² + 1), which is not the exact (1/N) Σ tr B_n (‖a_n‖² + 1)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 4)).double().eval()
    inputs = 2 * torch.randn(50, 6, dtype=torch.float64)
    data = TensorData("ce", (inputs,), torch.randint(0, 4, (50,)))
    p = torch.softmax(model(inputs).detach(), dim=1)
    output_traces = (p - p.pow(2)).sum(dim=1)
    input_norms = inputs.pow(2).sum(dim=1) + 1
    kflr = kflr_factors(model, data, "ce").factors["0"].trace
    assert kflr == pytest.approx(float(output_traces.mean() * input_norms.mean()), rel=1e-10)
    exact = float(dense_ggn(model, inputs, "ce").trace())
    assert exact == pytest.approx(float((output_traces * input_norms).mean()), rel=1e-10)
    assert abs(kflr - exact) / exact > 1e-3


def test_kflr_is_exact_for_a_conv_with_one_output_position_and_one_sample():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Tanh(), nn.Linear(3, 4)).double().eval()
    data = TensorData("conv", (torch.randn(1, 2, 3, 3, dtype=torch.float64),), torch.tensor([0]))
    factors = kflr_factors(model, data, "ce").factors
    for name, block in blocks(dense_ggn(model, data.inputs[0], "ce"), model).items():
        torch.testing.assert_close(factors[name].dense(), block, rtol=1e-10, atol=1e-12, msg=name)


def test_estimate_curvature_kflr_reports_the_kronecker_traces_and_eigenvalues():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 7)).double().eval()
    data = TensorData("lin", (torch.randn(64, 5, dtype=torch.float64),), None)
    result = estimate_curvature(model, data, CurvatureSpec(loss="distill", method="kflr", batch_size=16, top_k=4))
    exact = estimate_curvature(model, data, CurvatureSpec(loss="distill", exact=True, batch_size=16, top_k=4))
    assert result.layers["0"].trace == pytest.approx(exact.layers["0"].trace, rel=1e-10)
    assert result.top_eigenvalues == pytest.approx(exact.top_eigenvalues, rel=1e-8)
    assert result.layers["0"].trace_stderr == 0 and result.converged
    assert result.num_hvps == 4 * 7  # one backward per output dimension per batch
    subset = estimate_curvature(model, data, CurvatureSpec(loss="distill", method="kflr", max_samples=32))
    layer = subset.layers["0"]
    assert layer.trace_stderr_probe == 0 and layer.trace_stderr_data > 0 and subset.num_samples == 32


def test_kfac_samples_labels_and_its_error_bar_covers_kflr():
    """K-FAC's Monte-Carlo G is unbiased for KFLR's: over seeds, the trace lands within the
    reported 95% bar of the KFLR trace in most runs, and the bar shrinks nowhere to zero."""
    model = tanh_mlp()
    torch.manual_seed(4)
    data = TensorData("mc", (torch.randn(256, 5, dtype=torch.float64),), torch.randint(0, 3, (256,)))
    kflr = estimate_curvature(model, data, CurvatureSpec(method="kflr", batch_size=64))
    covered = 0
    for seed in range(10):
        kfac = estimate_curvature(model, data, CurvatureSpec(method="kfac", batch_size=64, trace=TraceSpec(seed=seed)))
        for name, layer in kfac.layers.items():
            assert layer.trace_stderr_probe > 0
            covered += abs(layer.trace - kflr.layers[name].trace) <= 1.96 * layer.trace_stderr
    assert covered >= 16, f"only {covered} of 20 K-FAC traces within their 95% bar of KFLR"


def test_kfac_needs_a_linear_or_conv_layer():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.weight

    data = TensorData("x", (torch.randn(8, 3),), None)
    with pytest.raises(InputError, match="Linear and Conv2d"):
        estimate_curvature(Scale().eval(), data, CurvatureSpec(loss="distill", method="kfac"))


def test_cli_method_kflr_reports_the_linear_and_conv_layers(cli, factory_file, tmp_path):
    import json

    from tests.helpers.factories import FACTORIES

    path = factory_file(FACTORIES, name="tiny_factories.py")
    out = tmp_path / "kflr.json"
    result = cli("curvature", f"{path}:model", "--data", f"{path}:data", "--method", "kflr", "--json", str(out))
    assert result.code == 0, result.err
    payload = json.loads(out.read_text())
    assert payload["method"].startswith("kflr") and set(payload["layers"]) == {"conv", "mix", "head"}  # no BatchNorm
    assert payload["trace"] == pytest.approx(sum(layer["trace"] for layer in payload["layers"].values()))
