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
from compress.lowrank.fisher import output_fisher_diag
from compress.lowrank.settings import LowRankSettings
from compress.lowrank.size import factorised_params
from compress.plan.channels import ChannelPlan
from compress.plan.make import PlanEvidence, PlanSpec, layer_options, make_plan
from compress.plan.measured import SingleLayerLoss, mean_loss
from compress.plan.ranks import RANK_METHOD, FactorisedOptions, offered_ranks
from compress.plan.reconstructed import omega_from_error
from compress.plan.recipe import plan_recipe
from compress.plan.reconstructed import Reconstructions
from compress.plan.size import size_model, tensor_bits
from compress.reconstruct.stats import collect_layer_stats
from compress.recipe.check import check_against_model
from compress.recipe.schema import Recipe
from compress.vocab.costs import latency_variant
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
                     lowrank={n: LowRankSettings(rank=o.rank, method=RANK_METHOD) for n, o in choices.items() if o.rank})
    applied = copy.deepcopy(model)
    apply_(applied, spec, source, None, None, 32)
    assert deployed_bits(applied.eval()) == sizes.total_bits(choices)


def _quant(option: LayerOption):
    from compress.plan.settings import quant_rule
    from compress.quant.records import QuantSettings

    rule = quant_rule(option)
    return None if rule is None else QuantSettings(**rule)


def _layer_outputs(model: nn.Module, name: str, inputs: list) -> torch.Tensor:
    """The outputs of layer ``name`` over ``inputs``, one row per sample (token / position)."""
    rows = []
    handle = model.get_submodule(name).register_forward_hook(
        lambda _m, _a, out: rows.append(out.movedim(1, -1).reshape(-1, out.shape[1]) if out.ndim == 4 else out))
    with torch.no_grad():
        for batch in inputs:
            model(*batch)
    handle.remove()
    return torch.cat(rows).double()


def test_priced_weight_and_error_are_what_apply_deploys() -> None:
    """Float factors: the planner's E_ρ equals (1/N)·Σ_t Σ_i ρ_i·(y'_i − y_i)² measured on the outputs
    of the layer apply writes, ρ = d/mean(d) of the output Fisher apply uses; quantized factors: the
    single-layer loss the planner measures equals the loss of the model apply writes."""
    model, source = net(), data()
    inputs = [b.inputs for b in source.batches(32)]
    reconstruction = Reconstructions(model, list(source.batches(32)))
    measure = SingleLayerLoss(model, source, "ce", 32, reconstruction)
    stats = collect_layer_stats(model, inputs, ["conv", "head"])
    fisher = output_fisher_diag(model, inputs, ["conv", "head"])
    for name, rank in (("conv", 5), ("head", 4)):
        torch.testing.assert_close(reconstruction.factorised.output_fisher(name), fisher[name], rtol=0, atol=0)
        applied = copy.deepcopy(model)
        apply_lowrank_(applied, {name: LowRankSettings(rank=rank, method=RANK_METHOD)}, stats, fisher)
        squared = (_layer_outputs(applied, name, inputs) - _layer_outputs(model, name, inputs)) ** 2
        rho = fisher[name] / fisher[name].mean()
        error = reconstruction.factorised.error(name, LayerOption(None, rank=rank))
        assert error == pytest.approx(float((squared * rho).sum(dim=1).mean()), rel=1e-5)
        for bits in (8, 3):
            option = LayerOption(bits, rank=rank)
            spec = ApplySpec({name: _quant(option)}, lowrank={name: LowRankSettings(rank=rank, method=RANK_METHOD)})
            applied = copy.deepcopy(model)
            apply_(applied, spec, source, None, None, 32)
            with torch.no_grad():
                deployed = mean_loss(applied.eval(), measure.batches, measure.references, "ce") - measure.base
            assert measure(name, option) == pytest.approx(deployed, rel=1e-4, abs=1e-6)


def test_fisher_weighted_omega_is_the_loss_change_of_a_linear_layer() -> None:
    """y = c ⊙ (W·x) under ½·‖y − y_FP32‖², averaged over samples: the weight Hessian is diag(c²) ⊗ A
    exactly (A = XᵀX/N), Tr = Σc²·Tr(A) and the output Fisher is d = c². Ω = (Tr/n)·E_ρ/h̄ of a rank
    option equals the loss change of its deployed weight exactly; the isotropic mapping (ρ ≡ 1) does not."""
    generator = torch.Generator().manual_seed(3)
    layer = nn.Linear(12, 6, bias=False).double()
    scale = torch.tensor([10.0, 0.1, 1.0, 0.02, 3.0, 0.3], dtype=torch.float64)
    model = nn.Sequential(layer)
    inputs = torch.randn(400, 12, generator=generator, dtype=torch.float64) @ torch.randn(12, 12, generator=generator,
                                                                                        dtype=torch.float64)
    stats = collect_layer_stats(model, [(inputs,)], ["0"])
    factorised = FactorisedOptions(model, lambda _: stats["0"], [], fisher={"0": scale ** 2})
    trace = float((scale ** 2).sum() * (inputs ** 2).sum(dim=1).mean())
    for rank in (1, 2, 3):
        option = LayerOption(None, rank=rank)
        delta = factorised.weight("0", option).double() - layer.weight.detach()
        loss = 0.5 * float(((inputs @ delta.T * scale) ** 2).sum(dim=1).mean())
        omega = omega_from_error(factorised.error("0", option), trace, layer.weight.numel(), stats["0"])
        assert omega == pytest.approx(loss, rel=1e-9)
        isotropic = omega_from_error(float(((inputs @ delta.T) ** 2).sum(dim=1).mean()), trace,
                                     layer.weight.numel(), stats["0"])
        assert abs(isotropic / loss - 1) > 0.1, "the test needs output rows of unequal curvature"
    estimated = output_fisher_diag(nn.Sequential(layer, _Scale(scale)), [(inputs,)] * 20, ["0"])["0"]
    torch.testing.assert_close(estimated, scale ** 2, rtol=0.1, atol=0)


class _Scale(nn.Module):
    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


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
    assert recipe.lowrank == {n: {"rank": layer.rank, "method": "fisher_whitened"}
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


def test_rank_options_need_statistics() -> None:
    model = net()
    names = list(compressible_layers(model))
    spec = PlanSpec({"size_mb": 1.0}, bits=(8, None), ranks=(0.5,))
    with pytest.raises(InputError, match="input statistics"):
        make_plan(model, curvature_for(model, dict.fromkeys(names, 1.0)), spec, PlanEvidence())
    found = PlanEvidence(reconstruction=Reconstructions(model, list(data().batches(32))))
    assert np.isfinite(make_plan(model, curvature_for(model, dict.fromkeys(names, 1.0)), spec, found
                                 ).predicted_delta_loss)


@pytest.mark.parametrize("layer, shape", [(nn.Linear(16, 12), (2, 3, 16)), (nn.Conv2d(4, 8, 3, padding=1), (2, 4, 6, 6))])
def test_a_rank_variant_is_exported_as_two_nodes_computing_the_factors(layer: nn.Module, shape: tuple, tmp_path) -> None:
    import onnx
    import onnxruntime as ort

    from compress.backends.ort.layer_variants import export_variant, factorised_layer

    torch.manual_seed(0)
    x = torch.randn(shape)
    path = export_variant(layer, LayerOption(None, rank=3), shape, tmp_path / "r3.onnx")
    nodes = [n.op_type for n in onnx.load(path).graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
    assert len(nodes) == 2, nodes
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    factors = factorised_layer(layer, 3)
    np.testing.assert_allclose(out, torch.relu(factors(x)).detach().numpy(), atol=1e-5)
    assert not torch.allclose(factors(x), layer(x), atol=1e-3), "rank 3 should change a random layer"
    assert latency_variant(LayerOption(4, rank=3)) == "weight-only+r3"
    assert latency_variant(LayerOption(None, rank=3)) == "fp32+r3"


def test_latency_table_times_rank_options_and_a_latency_budget_holds(tmp_path, monkeypatch) -> None:
    from compress.backends.ort.latency_table import latency_table

    monkeypatch.setenv("COMPRESS_CACHE", str(tmp_path))
    model, source = net(), data()
    names = list(compressible_layers(model))
    spec = PlanSpec({}, bits=(8, None), ranks=(0.5,))
    table = latency_table(model, (source.inputs[0][:1],), layer_options(model, spec), batch_size=4)
    assert set(table.median_ms["head"]) == {"fp32", "fp32+r4"}
    assert table.costs().latency("head", LayerOption(8, rank=4)) == table.median_ms["head"]["fp32+r4"]
    fastest = sum(min(table.median_ms[n].values()) for n in names)
    slowest = sum(max(table.median_ms[n].values()) for n in names)
    budget = (fastest + slowest) / 2
    found = PlanEvidence(reconstruction=Reconstructions(model, list(source.batches(32))), latency=table.costs())
    plan = make_plan(model, curvature_for(model, dict.fromkeys(names, 1.0)), replace(spec, budgets={"latency_ms": budget}),
                     found)
    assert plan.totals["latency_ms"] <= budget + 1e-12
    assert plan.totals["latency_ms"] == pytest.approx(sum(table.costs().latency(n, l.option()) for n, l in plan.layers.items()))
