"""make_plan on a small model with a known curvature: budgets met, curvature drives bits."""

import pytest
import torch
from torch import nn

from compress.curvature.result import Curvature, LayerCurvature
from compress.errors import BudgetError, InputError
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
    with pytest.raises(BudgetError, match="size_mb=0.0001 cannot be met"):
        make_plan(model, curvature, PlanSpec(budgets={"size_mb": 0.0001}))


@pytest.mark.parametrize("text", ["bits=4", "avg_bits", "avg_bits=four", "size_mb=-1"])
def test_bad_budgets(text: str) -> None:
    with pytest.raises(InputError, match="bad budget"):
        parse_budget(text)


def test_measured_loss_changes_are_exact_and_leave_the_model_intact() -> None:
    import copy

    from compress.data.source import TensorData
    from compress.plan.measured import SingleLayerLoss
    from compress.quant.apply import compress_weights_

    model, _ = model_and_curvature({"0": 1.0, "2": 1.0, "4": 1.0})
    generator = torch.Generator().manual_seed(0)
    data = TensorData("x", (torch.randn(40, 32, generator=generator),), torch.randint(0, 8, (40,), generator=generator))
    before = copy.deepcopy(model.state_dict())
    measure = SingleLayerLoss(model, data, "ce", batch_size=16)
    option = LayerOption(2)
    measured = measure("2", option)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    def loss(m) -> float:
        with torch.no_grad():
            return float(nn.functional.cross_entropy(m(data.inputs[0]), data.targets))

    expected = loss(compress_weights_(copy.deepcopy(model), {"2": option})) - loss(model)
    assert measured == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_lazy_measurement_gives_the_fully_measured_optimum() -> None:
    """Ω ≤ max(Ω, ΔL), so measuring only what the solver picks must reach the same optimum as
    measuring every option first; the brute-force check uses the fully measured table."""
    from compress.data.source import TensorData
    from compress.plan.make import layer_options
    from compress.plan.measured import SingleLayerLoss

    model, curvature = model_and_curvature({"0": 0.01, "2": 0.01, "4": 0.01})  # Ω far below the truth
    generator = torch.Generator().manual_seed(1)
    data = TensorData("x", (torch.randn(64, 32, generator=generator),), torch.randint(0, 8, (64,), generator=generator))
    spec = PlanSpec(budgets={"avg_bits": 3.5}, bits=(2, 3, 4, 8))
    lazy = SingleLayerLoss(model, data, "ce", batch_size=32)
    plan = make_plan(model, curvature, spec, PlanEvidence(measure=lazy))
    full = SingleLayerLoss(model, data, "ce", batch_size=32)
    options = layer_options(model, spec)
    full.measure_all([(n, o) for n, opts in options.items() for o in opts])
    reference = make_plan(model, curvature, spec, PlanEvidence(measure=full))
    assert plan.predicted_delta_loss == pytest.approx(reference.predicted_delta_loss, rel=1e-12)
    assert len(lazy.cache) < len(full.cache)
    assert plan.measured_options == len(lazy.cache)


def test_verification_keeps_the_candidate_with_the_least_measured_whole_plan_loss() -> None:
    from compress.data.source import TensorData
    from compress.plan.measured import SingleLayerLoss

    model, curvature = model_and_curvature({"0": 1.0, "2": 1.0, "4": 1.0})
    generator = torch.Generator().manual_seed(2)
    data = TensorData("x", (torch.randn(64, 32, generator=generator),), torch.randint(0, 8, (64,), generator=generator))
    measure = SingleLayerLoss(model, data, "ce", batch_size=32)
    spec = PlanSpec(budgets={"avg_bits": 3.0}, bits=(2, 3, 4, 8), verify=6)
    plan = make_plan(model, curvature, spec, PlanEvidence(measure=measure))
    assert len(plan.verified) == 6
    measured = [row["measured_delta_loss"] for row in plan.verified]
    best = plan.verified[measured.index(min(measured))]
    assert {n: layer.option().label() for n, layer in plan.layers.items()} == best["choices"]
    chosen = {n: layer.option() for n, layer in plan.layers.items()}
    assert measure.joint(chosen) == pytest.approx(min(measured), rel=1e-9)
    assert [row["predicted_delta_loss"] for row in plan.verified] == sorted(r["predicted_delta_loss"] for r in plan.verified)
