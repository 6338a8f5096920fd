"""Rank options in the planner: exact size accounting of factorised layers, the deployed weight and
error the planner prices equal what apply deploys, plan → recipe → apply round trip, and no
dominated rank option is ever chosen."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from compress.apply.pipeline import ApplySpec, apply_
from compress.data.source import TensorData
from compress.errors import ConfigError, InputError
from compress.lowrank.apply import apply_lowrank_
from compress.lowrank.settings import LowRankSettings
from compress.lowrank.size import factorised_params
from compress.plan.channels import ChannelPlan
from compress.plan.make import PlanEvidence, PlanSpec, layer_options, make_plan
from compress.plan.measured import SingleLayerLoss, mean_loss
from compress.plan.ranks import offered_ranks
from compress.plan.recipe import plan_recipe
from compress.plan.reconstructed import Reconstructions
from compress.plan.size import size_model, tensor_bits
from compress.reconstruct.stats import collect_layer_stats
from compress.recipe.check import check_against_model
from compress.recipe.schema import Recipe
from compress.vocab.costs import LatencyCosts
from compress.vocab.layers import compressible_layers
from compress.vocab.options import LayerOption
from tests.helpers.curvature import curvature_for
from tests.test_plan_apply_roundtrip import deployed_bits


class Net(nn.Module):
    """conv3x3(3→16) BN ReLU, depthwise 3x3, conv1x1(16→16) with bias, flatten, linear(576→10)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.mix = nn.Conv2d(16, 16, 1)
        self.head = nn.Linear(16 * 6 * 6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        return self.head(torch.relu(self.mix(torch.relu(self.dw(h)))).flatten(1))


def net() -> nn.Module:
    model = Net()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.2, 0.2)
        model.bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


def data(count: int = 64) -> TensorData:
    generator = torch.Generator().manual_seed(0)
    return TensorData("random", (torch.randn(count, 3, 6, 6, generator=generator),),
                      torch.randint(0, 10, (count,), generator=generator))


def evidence(model: nn.Module, source: TensorData, batch_size: int = 32) -> PlanEvidence:
    reconstruction = Reconstructions(model, list(source.batches(batch_size)))
    return PlanEvidence(measure=SingleLayerLoss(model, source, "ce", batch_size, reconstruction),
                        reconstruction=reconstruction)


def test_offered_ranks_follow_the_ratios_and_the_size_rule() -> None:
    model = net()
    assert offered_ranks(model.conv, (0.25, 0.5, 0.75)) == [2, 5, 7]  # 16×27: ⌊ρ·432/43⌋
    assert offered_ranks(model.head, (0.25, 0.5, 0.99)) == [2, 4, 9]  # 10×576: ⌊ρ·5760/586⌋, 9 < 5760/586
    assert offered_ranks(model.dw, (0.5,)) == []  # depthwise: one output per group
    assert offered_ranks(model.mix, (0.01,)) == []  # rank 0
    options = layer_options(model, PlanSpec({}, bits=(4, None), ranks=(0.5,)))["head"]
    assert [o for o in options if o.rank] == [LayerOption(4, rank=4), LayerOption(None, rank=4)]
    assert layer_options(model, PlanSpec({}, bits=(4, None)))["head"] == [LayerOption(4), LayerOption(None)]
    with pytest.raises(ConfigError, match="ranks"):
        PlanSpec({}, ranks=(1.0,))
    with pytest.raises(ConfigError, match="weight bits only"):
        LayerOption(8, act_bits=8, rank=3)
    assert LayerOption(8, rank=3).label() == "w8+r3"


@pytest.mark.parametrize("name", ["conv", "mix", "head"])
def test_float_factorised_size_is_counted_exactly(name: str) -> None:
    """The size model's bits of a float rank option = the bits of the model apply_lowrank_ writes."""
    model = net()
    names = list(compressible_layers(model))
    sizes = size_model(model, names, ChannelPlan(model, {}, {}))
    stats = collect_layer_stats(model, [data().inputs], [name])
    for rank in offered_ranks(model.get_submodule(name), (0.25, 0.5, 0.75)):
        applied = copy.deepcopy(model)
        apply_lowrank_(applied, {name: LowRankSettings(rank=rank)}, stats)
        choices = {n: LayerOption(None, rank=rank) if n == name else LayerOption(None) for n in names}
        assert sizes.total_bits(choices) == tensor_bits(applied)
        m, n, groups = 16 if name != "head" else 10, model.get_submodule(name).weight[0].numel(), 1
        assert sizes.layer_bits(name, choices[name], False) - sizes.layer_bits(name, LayerOption(None), False) == \
            32 * (factorised_params(m, n, rank, groups) - m * n)


def test_quantized_factorised_size_is_counted_exactly() -> None:
    """8-bit factors (rounded to nearest, BN folded): codes, one fp32 scale per factor row, biases."""
    model, source = net(), data()
    names = list(compressible_layers(model))
    sizes = size_model(model, names, ChannelPlan(model, {}, {}))
    choices = {"conv": LayerOption(8, rank=5), "dw": LayerOption(8), "mix": LayerOption(4, rank=3),
               "head": LayerOption(None, rank=4)}
    spec = ApplySpec({n: q for n, o in choices.items() if (q := _quant(o))},
                     lowrank={n: LowRankSettings(rank=o.rank) for n, o in choices.items() if o.rank})
    applied = copy.deepcopy(model)
    apply_(applied, spec, source, None, None, 32)
    assert deployed_bits(applied.eval()) == sizes.total_bits(choices)


def _quant(option: LayerOption):
    from compress.plan.settings import quant_rule
    from compress.quant.records import QuantSettings

    rule = quant_rule(option)
    return None if rule is None else QuantSettings(**rule)


def test_priced_weight_and_error_are_what_apply_deploys() -> None:
    """Float factors: the planner's E equals apply's exactly measured output error; quantized
    factors: the single-layer loss the planner measures equals the loss of the model apply writes."""
    model, source = net(), data()
    reconstruction = Reconstructions(model, list(source.batches(32)))
    measure = SingleLayerLoss(model, source, "ce", 32, reconstruction)
    stats = collect_layer_stats(model, [b.inputs for b in source.batches(32)], ["conv", "head"])
    for name, rank in (("conv", 5), ("head", 4)):
        applied = copy.deepcopy(model)
        records = apply_lowrank_(applied, {name: LowRankSettings(rank=rank)}, stats)
        error = reconstruction.factorised.error(name, LayerOption(None, rank=rank))
        assert error == pytest.approx(records.layers[name].output_error, rel=1e-6)
        for bits in (8, 3):
            option = LayerOption(bits, rank=rank)
            spec = ApplySpec({name: _quant(option)}, lowrank={name: LowRankSettings(rank=rank)})
            applied = copy.deepcopy(model)
            apply_(applied, spec, source, None, None, 32)
            with torch.no_grad():
                deployed = mean_loss(applied.eval(), measure.batches, measure.references, "ce") - measure.base
            assert measure(name, option) == pytest.approx(deployed, rel=1e-4, abs=1e-6)


def test_plan_with_ranks_round_trips_through_apply() -> None:
    """plan → recipe → validate → apply: the applied model stores exactly the planned size, and its
    loss change is the one the planner's whole-plan verification measured."""
    model, source = net(), data()
    names = list(compressible_layers(model))
    dense = size_model(model, names, ChannelPlan(model, {}, {})).total_bits({n: LayerOption(8) for n in names})
    spec = PlanSpec({"size_mb": 0.45 * dense / 8e6}, bits=(8, 4, None), ranks=(0.25, 0.5), verify=3)
    found = evidence(model, source)
    plan = make_plan(model, curvature_for(model, dict.fromkeys(names, 1.0)), spec, found)
    assert any(layer.rank for layer in plan.layers.values()), "the budget should need a rank option"
    recipe = Recipe.from_dict(plan_recipe(plan, "user", "user", None))
    assert check_against_model(recipe, model) == []
    assert recipe.lowrank == {n: {"rank": layer.rank, "method": "whitened"}
                              for n, layer in plan.layers.items() if layer.rank}
    applied = copy.deepcopy(model)
    apply_(applied, ApplySpec(recipe.quant_settings(names), recipe.prune_settings(names),
                              lowrank=recipe.lowrank_settings(names)), source, None, None, 32)
    assert deployed_bits(applied.eval()) / 8e6 == pytest.approx(plan.totals["size_mb"], rel=1e-12)
    verified = min(plan.verified, key=lambda row: row["measured_delta_loss"])
    assert verified["choices"] == {n: layer.option().label() for n, layer in plan.layers.items()}
    with torch.no_grad():
        delta = mean_loss(applied, found.measure.batches, found.measure.references, "ce") - found.measure.base
    assert delta == pytest.approx(verified["measured_delta_loss"], rel=1e-5, abs=1e-6)


def test_a_larger_and_worse_rank_option_is_never_chosen() -> None:
    """On full-rank random weights a rank option stores more than the plain 4-bit option and is
    predicted worse; at every budget the plan leaves it, and no chosen option is dominated."""
    model, source = net(), data()
    names = list(compressible_layers(model))
    curvature = curvature_for(model, dict.fromkeys(names, 1.0))
    found = PlanEvidence(reconstruction=Reconstructions(model, list(source.batches(32))))
    sizes = size_model(model, names, ChannelPlan(model, {}, {}))
    options = layer_options(model, PlanSpec({}, bits=(8, 4, None), ranks=(0.75,)))
    dense = sizes.total_bits({n: LayerOption(None) for n in names}) / 8e6
    plans = [make_plan(model, curvature, PlanSpec({"size_mb": f * dense}, bits=(8, 4, None), ranks=(0.75,)), found)
             for f in (0.2, 0.3, 0.5, 1.0)]
    dominated = 0
    for plan in plans:
        for name, layer in plan.layers.items():
            bits = {o: sizes.layer_bits(name, o, True) for o in options[name]}
            omega = {o: layer.considered[o.label()] for o in options[name]}
            chosen = layer.option()
            for other in options[name]:
                worse = bits[other] < bits[chosen] and omega[other] < omega[chosen]
                assert not worse, f"{name}: chose {chosen.label()} over the smaller, better {other.label()}"
            for option in (o for o in options[name] if o.rank):
                dominated += bits[option] > bits[LayerOption(4)] and omega[option] > omega[LayerOption(4)]
    assert dominated > 0, "the test needs a rank option that is larger and worse than 4 bits"
    assert all(layer.option() != LayerOption(8, rank=7) for plan in plans for layer in plan.layers.values())


def test_rank_options_need_statistics_and_no_latency_table() -> None:
    model = net()
    names = list(compressible_layers(model))
    spec = PlanSpec({"size_mb": 1.0}, bits=(8, None), ranks=(0.5,))
    with pytest.raises(InputError, match="input statistics"):
        make_plan(model, curvature_for(model, dict.fromkeys(names, 1.0)), spec, PlanEvidence())
    found = PlanEvidence(reconstruction=Reconstructions(model, list(data().batches(32))))
    assert np.isfinite(make_plan(model, curvature_for(model, dict.fromkeys(names, 1.0)), spec, found
                                 ).predicted_delta_loss)
    table = LatencyCosts("ort-cpu", {n: {"fp32": 1.0, "weight-only": 1.0} for n in names})
    with pytest.raises(InputError, match="latency table"):
        make_plan(model, curvature_for(model, dict.fromkeys(names, 1.0)), spec, replace(found, latency=table))
