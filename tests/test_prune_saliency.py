"""Second-order saliency against dense float64 Hessians: Hutchinson's diagonal within its exact
probe error, the exact Fisher/GGN diagonal equal to the Hessian diagonal where that identity holds
(ReLU nets, squared error on a linear model) and not elsewhere, and OBD exact on a quadratic loss."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compress.curvature.exact import dense_hessian
from compress.curvature.losses import loss_function
from compress.curvature.params import ParamLayout
from compress.curvature.prepare import prepare_operator, reference_outputs
from compress.data.source import TensorData
from compress.errors import InputError
from compress.prune.saliency import estimate_saliency, fisher_diagonal, hutchinson_diagonal, layer_saliency
from compress.testing.tiny import tiny_convnet, tiny_data, tiny_mlp, trained


def double_data(data: TensorData) -> TensorData:
    return TensorData(data.name, tuple(x.double() for x in data.inputs), data.targets)


def relu_mlp() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)).double().eval()


def hessian_diagonal(model: nn.Module, data: TensorData, loss: str) -> torch.Tensor:
    batches = list(data.batches(16))
    references = [reference_outputs(model, b, loss) for b in batches]
    return dense_hessian(model, batches, references, loss_function(loss), len(data))


def flat(model: nn.Module, values: dict[str, torch.Tensor]) -> torch.Tensor:
    return ParamLayout.of(model).flatten(values)


@pytest.mark.parametrize("name", ["mlp", "conv"])
def test_hutchinson_diagonal_is_within_its_exact_probe_error(name: str) -> None:
    data = double_data(tiny_data(name))
    model = (tiny_mlp() if name == "mlp" else tiny_convnet()).double().eval()
    hessian = hessian_diagonal(model, data, "ce")
    probes = 200
    estimate = hutchinson_diagonal(prepare_operator(model, data, "ce", batch_size=16), probes, seed=1)
    # v_q (Hv)_q = H_qq + Σ_{j≠q} H_qj v_q v_j: unbiased with variance Σ_{j≠q} H_qj² per probe
    sigma = ((hessian.pow(2).sum(dim=1) - hessian.diagonal().pow(2)).clamp(min=0) / probes).sqrt()
    error = (flat(model, estimate.values) - hessian.diagonal()).abs()
    assert bool((error <= 5 * sigma + 1e-12).all()), float((error / sigma).max())
    ratio = flat(model, estimate.stderr) / sigma
    assert 0.8 < float(ratio.median()) < 1.25, float(ratio.median())
    assert estimate.num_probes == probes


def test_fisher_diagonal_is_the_hessian_diagonal_of_a_relu_net() -> None:
    model, data = relu_mlp(), double_data(tiny_data("mlp"))
    hessian = hessian_diagonal(model, data, "ce")
    ggn = flat(model, fisher_diagonal(model, data, "ce", "fisher", batch_size=16))
    torch.testing.assert_close(ggn, hessian.diagonal(), rtol=1e-9, atol=1e-12)


def test_fisher_diagonal_is_the_hessian_diagonal_for_squared_error_on_a_linear_model() -> None:
    torch.manual_seed(0)
    model, data = nn.Linear(6, 3).double(), double_data(tiny_data("mlp"))
    hessian = hessian_diagonal(model, data, "distill")
    ggn = flat(model, fisher_diagonal(model, data, "distill", "fisher", batch_size=16))
    torch.testing.assert_close(ggn, hessian.diagonal(), rtol=1e-9, atol=1e-12)


def test_fisher_diagonal_differs_from_the_hessian_diagonal_of_a_smooth_net() -> None:
    data = double_data(tiny_data("mlp"))
    model = trained(tiny_mlp().double(), data, steps=100)
    hessian = hessian_diagonal(model, data, "ce").diagonal()
    ggn = flat(model, fisher_diagonal(model, data, "ce", "fisher", batch_size=16))
    assert float((ggn - hessian).abs().max()) > 1e-3 * float(hessian.abs().max())


def test_empirical_fisher_is_the_mean_squared_per_sample_gradient() -> None:
    model, data = tiny_convnet().double(), double_data(tiny_data("conv", num_samples=12))
    (inputs,), targets = data.inputs, data.targets
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for x, y in zip(inputs, targets):
        loss = nn.functional.cross_entropy(model(x[None]), y[None])
        for (n, _), g in zip(model.named_parameters(), torch.autograd.grad(loss, list(model.parameters()))):
            expected[n] += g.pow(2) / len(data)
    actual = fisher_diagonal(model, data, "ce", "empirical-fisher", batch_size=5)
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=1e-10, atol=1e-14)


def test_obd_saliency_is_the_exact_loss_increase_on_a_quadratic_loss() -> None:
    torch.manual_seed(0)
    model, data = nn.Linear(6, 3).double(), double_data(tiny_data("mlp"))
    saliency = layer_saliency(model, fisher_diagonal(model, data, "distill"))
    (inputs,), teacher = data.inputs, model(*data.inputs).detach()
    for index in range(model.weight.numel()):
        pruned = copy.deepcopy(model)
        with torch.no_grad():
            pruned.weight.view(-1)[index] = 0
            increase = loss_function("distill")(pruned(inputs), teacher)
        assert float(increase) == pytest.approx(float(saliency[""].view(-1)[index]), rel=1e-10)


@pytest.mark.parametrize("curvature", ["fisher", "empirical-fisher", "hutchinson"])
def test_estimate_saliency_covers_every_layer_weight(curvature: str) -> None:
    model, data = tiny_convnet(), tiny_data("conv")
    saliency = estimate_saliency(model, data, "ce", curvature, num_probes=4)
    assert sorted(saliency) == ["conv", "head", "mix"]
    for name, value in saliency.items():
        assert value.shape == model.get_submodule(name).weight.shape and bool((value >= 0).all())


@pytest.mark.parametrize("call, message", [
    (lambda m, d: estimate_saliency(m, d, "ce", "kfac"), "curvature"),
    (lambda m, d: fisher_diagonal(m, d, "distill", "empirical-fisher"), "needs targets"),
    (lambda m, d: fisher_diagonal(m, TensorData("x", d.inputs, None), "ce"), "no targets"),
    (lambda m, d: estimate_saliency(m, d, "ce", "hutchinson", num_probes=1), "num_probes"),
    (lambda m, d: fisher_diagonal(m.train(), d, "ce"), "training mode"),
])
def test_bad_saliency_requests_are_user_errors(call, message: str) -> None:
    with pytest.raises(InputError, match=message):
        call(tiny_convnet(), tiny_data("conv"))
