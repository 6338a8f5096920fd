"""Absorbed pricing (compress/plan/absorbed.py): the price of compressing a layer once apply's
input-drift correction has re-fitted the layers after it, checked against apply itself, against a
least-squares re-fit written here, and against the isolated price it replaces."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from compress.data.source import TensorData
from compress.errors import ConfigError, InputError
from compress.plan.absorbed import AbsorbedPrices, absorbable, auto_pricing
from compress.plan.make import PlanEvidence, PlanSpec, layer_options, make_plan
from compress.plan.measured import SingleLayerLoss
from compress.plan.reconstructed import Reconstructions
from compress.plan.recipe import plan_recipe
from compress.reconstruct.layer import ReconstructSettings
from compress.reconstruct.sequential import reconstruct_model_
from compress.vocab.options import LayerOption
from tests.helpers.curvature import curvature_for

TWO_BIT = LayerOption(2)


def _net(hidden: int = 12, relu: bool = True, samples: int = 2048):
    """x [samples, 6] → Linear(6, hidden) → (ReLU) → Linear(hidden, 4), fixed random weights and
    anisotropic inputs; the data's targets are the float model's classes (cross-entropy)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(samples, 6, generator=generator) * torch.logspace(0, -1, 6)
    model = nn.Sequential(nn.Linear(6, hidden, bias=False), nn.ReLU() if relu else nn.Identity(),
                          nn.Linear(hidden, 4, bias=False)).eval()
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
        targets = model(x).argmax(1)
    return model, TensorData("toy", (x,), targets)


def _prices(model, data):
    reconstruction = Reconstructions(model, list(data.batches(512)))
    measure = SingleLayerLoss(model, data, "ce", 512, reconstruction)
    curvature = curvature_for(model, {"0": 1.0, "2": 1.0})
    return AbsorbedPrices(reconstruction, curvature, measure.loss_change), measure, curvature


def test_absorbed_loss_equals_apply_with_the_layer_after_refitted_in_float() -> None:
    """Apply's own true-sequential drift reconstruction, layer 0 at 2 bits and layer 2 left in float
    (no bits: the sweep keeps the drift target W* unchanged), deploys exactly the model the absorbed
    price measures: equal up to float32 evaluation of the loss."""
    model, data = _net()
    prices, measure, _ = _prices(model, data)
    applied = copy.deepcopy(model)
    reconstruct_model_(applied, {"0": ReconstructSettings(bits=2), "2": ReconstructSettings(bits=None)},
                       [b.inputs for b in data.batches(512)])
    expected = measure.loss_change(applied.eval())
    got = prices.delta_loss("0", TWO_BIT)
    assert abs(got - expected) <= 1e-5 * abs(expected) + 1e-7, (got, expected)
    assert got < 0.7 * measure("0", TWO_BIT)  # the re-fit absorbed part


def test_absorbed_loss_matches_a_least_squares_refit_written_here() -> None:
    """The layer after the compressed one re-fitted by plain least squares on the calibration data,
    min Σ‖W₂·relu(W₁x) − V·relu(Ŵ₁x)‖² over V (numpy lstsq, 2,048 samples for 12 inputs): apply's rule
    adds a GCV ridge of at least 1e-4·mean(diag H̃), which moves the loss by far less than 1%."""
    model, data = _net()
    prices, measure, _ = _prices(model, data)
    compressed = prices.reconstruction.weight("0", TWO_BIT).double()
    x = data.inputs[0].double()
    weight1, weight2 = model[0].weight.detach().double(), model[2].weight.detach().double()
    hidden, drifted = torch.relu(x @ weight1.T), torch.relu(x @ compressed.T)
    target = hidden @ weight2.T
    refit = np.linalg.lstsq(drifted.numpy(), target.numpy(), rcond=None)[0].T
    reference = copy.deepcopy(model)
    with torch.no_grad():
        reference[0].weight.copy_(compressed)
        reference[2].weight.copy_(torch.from_numpy(refit))
    expected = measure.loss_change(reference)
    got = prices.delta_loss("0", TWO_BIT)
    assert abs(got - expected) <= 0.01 * abs(expected), (got, expected)


def test_additive_isolated_price_overestimates_where_absorption_is_exact() -> None:
    """Linear → linear (no ReLU), the compressed first layer of full column rank (8 outputs of 6
    inputs): W₂W₁x = (W₂W₁Ŵ₁⁺)·Ŵ₁x, so the drift re-fit undoes its 2-bit error entirely, up to the
    GCV ridge (≥ 1e-4·mean diag H̃). The isolated price (layer alone, float model) does
    not see it; the absorbed price must be ~0 (both measured and trace-mapped), and a plan priced
    absorbed records it."""
    model, data = _net(hidden=8, relu=False)
    prices, measure, curvature = _prices(model, data)
    assert torch.linalg.matrix_rank(prices.reconstruction.weight("0", TWO_BIT)) == 6
    isolated = measure("0", TWO_BIT)
    assert isolated > 1e-3
    assert abs(prices.delta_loss("0", TWO_BIT)) < 1e-3 * isolated
    isolated_omega = prices.reconstruction.omega("0", TWO_BIT, 1.0, model[0].weight.numel())
    assert prices.omega("0", TWO_BIT) < 1e-3 * isolated_omega
    spec = PlanSpec(budgets={"avg_bits": 2.0}, bits=(2,), pricing="absorbed")
    evidence = PlanEvidence(measure=measure, reconstruction=prices.reconstruction)
    absorbed = make_plan(model, curvature, spec, evidence)
    isolated_plan = make_plan(model, curvature, PlanSpec(budgets={"avg_bits": 2.0}, bits=(2,), pricing="isolated"),
                              evidence)
    assert (absorbed.pricing, isolated_plan.pricing) == ("absorbed", "isolated")
    assert absorbed.layers["0"].omega_absorbed == pytest.approx(prices.omega("0", TWO_BIT))
    assert absorbed.layers["0"].predicted_delta_loss < 1e-3 * isolated_plan.layers["0"].predicted_delta_loss
    assert isolated_plan.layers["0"].predicted_delta_loss >= isolated  # hybrid: max(Ω_rec, ΔL)


def test_the_last_layer_keeps_its_isolated_price() -> None:
    """Nothing runs after the last layer: Ω_abs = Ω_rec and ΔL_abs = the isolated ΔL."""
    model, data = _net()
    prices, measure, _ = _prices(model, data)
    assert prices.omega("2", TWO_BIT) == prices.reconstruction.omega("2", TWO_BIT, 1.0, model[2].weight.numel())
    assert prices.delta_loss("2", TWO_BIT) == pytest.approx(measure("2", TWO_BIT))


def test_pricing_is_checked_and_auto_follows_the_cost_rule() -> None:
    with pytest.raises(ConfigError, match="pricing"):
        PlanSpec(budgets={"avg_bits": 4.0}, pricing="joint")
    model, data = _net()
    options = layer_options(model, PlanSpec(budgets={"avg_bits": 4.0}))
    assert all(absorbable(o) == (o.bits is not None) for opts in options.values() for o in opts)
    assert auto_pricing(options, widest=12) == "absorbed"  # 4 options x 1 layer after: 4 <= 8 x 2 layers
    assert auto_pricing(options, widest=4096) == "isolated"  # too wide for cheap re-fits
    many = {f"l{i}": options["0"] for i in range(20)}  # 4 x 190 re-fits > 8 x 20
    assert auto_pricing(many, widest=12) == "isolated"
    prices, measure, curvature = _prices(model, data)
    plan = make_plan(model, curvature, PlanSpec(budgets={"avg_bits": 4.0}),
                     PlanEvidence(reconstruction=prices.reconstruction))
    assert plan.pricing == "absorbed" and plan.layers["0"].omega_absorbed is not None
    recorded = plan_recipe(plan, "model.py:net", "data.py:digits", None)["plan"]  # the recipe says how it priced
    assert recorded["pricing"] == "absorbed" and recorded["layers"]["0"]["omega_absorbed"] == plan.layers["0"].omega_absorbed
    assert make_plan(model, curvature, PlanSpec(budgets={"avg_bits": 4.0})).pricing == "isolated"  # nothing reconstructed
    with pytest.raises(InputError, match="absorbed pricing needs"):
        make_plan(model, curvature, PlanSpec(budgets={"avg_bits": 4.0}, pricing="absorbed"))
