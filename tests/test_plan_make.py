"""make_plan on a small model with a known curvature: budgets met, curvature drives bits."""

import pytest
import torch
from torch import nn

from compress.curvature.result import Curvature, LayerCurvature
from compress.errors import UserError
from compress.plan.make import PlanEvidence, PlanSpec, make_plan, parse_budget
from compress.plan.sensitivity import LayerOption, sensitivity


def model_and_curvature(traces: dict[str, float]):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 8))
    layers = {name: LayerCurvature(trace, 0.0, sum(p.numel() for p in model.get_submodule(name).parameters()), 0)
              for name, trace in traces.items()}
    curvature = Curvature(layers, sum(traces.values()), 0.0, [], 0, 0.0, "ce", 0.0, "exact", True)
    return model, curvature


def test_the_sharpest_layer_keeps_the_most_bits_and_the_budget_holds() -> None:
    model, curvature = model_and_curvature({"0": 1.0, "2": 1000.0, "4": 1.0})
    plan = make_plan(model, curvature, PlanSpec(budgets={"avg_bits": 5.0}, bits=(2, 4, 8)))
    assert plan.totals["avg_bits"] <= 5.0 + 1e-9
    bits = {name: layer.weight_bits for name, layer in plan.layers.items()}
    assert bits["2"] == max(bits.values()) and bits["2"] > bits["0"]


def test_predicted_loss_is_the_sum_of_the_chosen_sensitivities() -> None:
    model, curvature = model_and_curvature({"0": 5.0, "2": 50.0, "4": 0.5})
    plan = make_plan(model, curvature, PlanSpec(budgets={"avg_bits": 3.0}))
    expected = 0.0
    for name, layer in plan.layers.items():
        info = curvature.layers[name]
        option = LayerOption(layer.weight_bits, layer.sparsity, layer.pattern)
        expected += sensitivity(model.get_submodule(name).weight, info.trace, info.num_params, option)
        assert layer.considered[option.label()] == layer.predicted_delta_loss
    assert plan.predicted_delta_loss == pytest.approx(expected, rel=1e-12)


def test_size_budget_counts_float_biases() -> None:
    model, curvature = model_and_curvature({"0": 1.0, "2": 1.0, "4": 1.0})
    float_mb = sum(p.numel() for p in model.parameters()) * 4 / 1e6
    plan = make_plan(model, curvature, PlanSpec(budgets={"size_mb": float_mb / 4}))
    assert plan.totals["size_mb"] <= float_mb / 4 + 1e-12
    with pytest.raises(UserError, match="size_mb=0.0001 cannot be met"):
        make_plan(model, curvature, PlanSpec(budgets={"size_mb": 0.0001}))


@pytest.mark.parametrize("text", ["bits=4", "avg_bits", "avg_bits=four", "size_mb=-1"])
def test_bad_budgets(text: str) -> None:
    with pytest.raises(UserError, match="bad budget"):
        parse_budget(text)


def test_measured_loss_changes_are_exact_and_leave_the_model_intact() -> None:
    import copy

    from compress.data.source import TensorData
    from compress.plan.make import layer_options
    from compress.plan.measured import measured_delta_loss
    from compress.quant.apply import compress_weights_

    model, curvature = model_and_curvature({"0": 1.0, "2": 1.0, "4": 1.0})
    generator = torch.Generator().manual_seed(0)
    data = TensorData("x", (torch.randn(40, 32, generator=generator),), torch.randint(0, 8, (40,), generator=generator))
    spec = PlanSpec(budgets={"avg_bits": 3.0}, bits=(2, 4))
    before = copy.deepcopy(model.state_dict())
    measured = measured_delta_loss(model, data, "ce", layer_options(model, spec), batch_size=16)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    def loss(m) -> float:
        with torch.no_grad():
            return float(nn.functional.cross_entropy(m(data.inputs[0]), data.targets))

    option = layer_options(model, spec)["2"][0]
    expected = loss(compress_weights_(copy.deepcopy(model), {"2": option})) - loss(model)
    assert measured["2"][0] == pytest.approx(expected, rel=1e-5, abs=1e-7)
    plan = make_plan(model, curvature, spec, PlanEvidence(measured=measured))
    for name, layer in plan.layers.items():
        chosen = [o.label() for o in layer_options(model, spec)[name]].index(
            LayerOption(layer.weight_bits).label())
        assert layer.predicted_delta_loss >= measured[name][chosen]
