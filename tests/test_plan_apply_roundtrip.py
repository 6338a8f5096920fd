"""Plan = apply: a plan with channel options, written as a recipe, validated and applied, deploys
exactly the size it predicted (±0.5%) and the loss change its verification measured.

Deployed size is counted here independently of the planner: every parameter and buffer of the
applied model as stored, a quantized weight at its bit width plus one fp32 scale per row."""

import copy

import pytest
import torch
from torch import nn

from compress.apply.pipeline import ApplySpec, apply_
from compress.data.source import TensorData
from compress.plan.channels import channel_plan
from compress.plan.make import PlanEvidence, PlanSpec, make_plan
from compress.plan.measured import SingleLayerLoss, mean_loss
from compress.plan.recipe import plan_recipe
from compress.quant.modules import QuantLayer
from compress.recipe.check import check_against_model
from compress.recipe.schema import Recipe
from compress.vocab.layers import compressible_layers
from tests.helpers.curvature import curvature_for


def deployed_bits(model: nn.Module) -> float:
    quantized = {id(m.weight): m for m in model.modules() if isinstance(m, QuantLayer) and m.settings.weight_bits}
    scales = {id(s) for m in quantized.values() if (s := getattr(m, "fixed_weight_scales", None)) is not None}
    total = 0.0
    for tensor in [*model.parameters(), *model.buffers()]:
        layer = quantized.get(id(tensor))
        if id(tensor) in scales:  # the reconstruction's per-channel scales: counted with their weight
            continue
        if layer is None:
            total += tensor.numel() * tensor.element_size() * 8
        else:
            total += tensor.numel() * layer.settings.weight_bits + tensor.shape[0] * 32
    return total


def round_trip(model: nn.Module, data: TensorData, spec: PlanSpec, batch_size: int):
    """plan -> recipe -> validate -> apply; returns the plan, the recipe's problems, the applied
    model and the measurement object (its base loss and batches)."""
    names = list(compressible_layers(model))
    measure = SingleLayerLoss(model, data, "ce", batch_size)
    plan = make_plan(model, curvature_for(model, dict.fromkeys(names, 1.0)), spec, PlanEvidence(measure=measure))
    recipe = Recipe.from_dict(plan_recipe(plan, "user", "user", None))
    problems = check_against_model(recipe, model)
    applied = copy.deepcopy(model)
    apply_(applied, ApplySpec(recipe.quant_settings(names), recipe.prune_settings(names)), data, None, None, batch_size)
    return plan, problems, applied.eval(), measure


def check_round_trip(model: nn.Module, data: TensorData, spec: PlanSpec, batch_size: int) -> None:
    plan, problems, applied, measure = round_trip(model, data, spec, batch_size)
    assert problems == []  # every plan the planner writes passes validate
    assert any(layer.pattern == "channel" for layer in plan.layers.values()), "the budget should need channels"
    predicted, deployed = plan.totals["size_mb"], deployed_bits(applied) / 8e6
    assert deployed == pytest.approx(predicted, rel=5e-3), f"predicted {predicted:.6f} MB, deployed {deployed:.6f} MB"
    assert plan.totals["size_mb"] <= spec.budgets["size_mb"] * 1.005
    verified = min(plan.verified, key=lambda row: row["measured_delta_loss"])
    assert verified["choices"] == {n: layer.option().label() for n, layer in plan.layers.items()}
    with torch.no_grad():
        delta = mean_loss(applied, measure.batches, measure.references, "ce") - measure.base
    assert delta == pytest.approx(verified["measured_delta_loss"], rel=1e-5, abs=1e-6)
    channels = channel_plan(model, list(plan.layers))
    for group, members in plan.channel_groups.items():  # a group is planned as one decision
        fractions = {channels.group_sparsity(m, group, plan.layers[m].option()) for m in members}
        assert len(fractions) == 1, (group, members, fractions)


def float_megabytes(model: nn.Module) -> float:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]) / 1e6


def test_mnist_cnn_plan_deploys_its_predicted_size_and_loss() -> None:
    from compress.data.spec import load_data
    from compress.models.spec import build_model

    model = build_model("builtin:mnist-cnn").eval()
    digits = load_data("builtin:mnist5k", "train", "heldout")
    data = digits.subset(range(128), "mnist128")
    spec = PlanSpec(budgets={"size_mb": 0.5 * float_megabytes(model) / 4}, bits=(8, None),
                    sparsities=(0.0, 0.25, 0.5), patterns=("channel",), verify=3)
    check_round_trip(model, data, spec, 64)


@pytest.mark.slow  # 11 M parameters: tens of seconds on 2 shared cores
def test_resnet18_plan_deploys_its_predicted_size_and_loss() -> None:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=10).eval()
    generator = torch.Generator().manual_seed(0)
    data = TensorData("random", (torch.randn(4, 3, 16, 16, generator=generator),),
                      torch.randint(0, 10, (4,), generator=generator))
    spec = PlanSpec(budgets={"size_mb": 0.6 * float_megabytes(model) / 4}, bits=(8, None),
                    sparsities=(0.0, 0.5), patterns=("channel",), verify=2)
    check_round_trip(model, data, spec, 4)
