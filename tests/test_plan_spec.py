"""Plan specs validate on construction; noisy traces are never rewarded; Conv1d is left alone by
every stage (never planned, refused by name in a recipe, float in the export)."""

import pytest
import torch
from torch import nn

from compress.curvature.result import Curvature, LayerCurvature
from compress.errors import ConfigError, InputError
from compress.plan.make import PlanSpec, make_plan
from compress.plan.overrides import parse_override
from compress.plan.sensitivity import Z95, compressed_weight, safe_trace
from compress.vocab.options import LayerOption


@pytest.mark.parametrize("fields, named", [
    ({"bits": (12,)}, "bits"), ({"bits": ()}, "bits"), ({"act_bits": (4,)}, "act_bits"),
    ({"sparsities": (1.0,)}, "sparsities"), ({"patterns": ("blocks",)}, "patterns"),
    ({"sparsity_limit": "ignore"}, "sparsity_limit"), ({"verify": 0}, "verify"),
    ({"budgets": {"avg_bit": 4}}, "avg_bit"), ({"budgets": {"size_mb": -1}}, "size_mb"),
    ({"overrides": ("head=w8",)}, "overrides"),
])
def test_a_plan_spec_refuses_bad_values_on_construction(fields: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        PlanSpec(**{"budgets": {"avg_bits": 4}, **fields})


def test_a_valid_plan_spec_is_accepted() -> None:
    spec = PlanSpec({"size_mb": 1.0}, bits=(4, 8, None), sparsities=(0.0, 0.5), patterns=("channel", "2:4"),
                    act_bits=(8, None), overrides=(parse_override("head=w8"),), verify=3)
    assert spec.channel_sparsities() == (0.5,)


def curvature(traces: dict[str, tuple[float, float]], model: nn.Module) -> Curvature:
    layers = {n: LayerCurvature(t, s, sum(p.numel() for p in model.get_submodule(n).parameters()), 8)
              for n, (t, s) in traces.items()}
    return Curvature(layers, 0.0, 0.0, [], 0, 0.0, "ce", 0.0, "hutchinson", True)


def test_safe_trace_uses_the_upper_error_bar_where_unconverged() -> None:
    assert safe_trace(5.0, 1.0) == 5.0  # converged: 5 − 1.96 > 0
    assert safe_trace(1.0, 1.0) == pytest.approx(1.0 + Z95)
    assert safe_trace(-1.0, 2.0) == pytest.approx(-1.0 + 2 * Z95)
    assert safe_trace(-5.0, 0.1) == 0.0  # never negative


def test_a_noisy_negative_trace_is_never_rewarded_and_is_recorded() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    traces = {"0": (-1.0, 2.0), "2": (4.0, 0.5)}
    plan = make_plan(model, curvature(traces, model), PlanSpec({"avg_bits": 8}, bits=(2, 8, None)))
    n = sum(p.numel() for p in model[0].parameters())
    weight = model[0].weight.detach()
    error = float((compressed_weight(weight, LayerOption(2)) - weight).double().pow(2).sum())
    assert plan.layers["0"].considered["w2"] == pytest.approx(0.5 * (-1.0 + 2 * Z95) / n * error)
    assert plan.layers["0"].considered["w2"] > 0
    assert plan.unconverged == ["0"] and not plan.layers["0"].trace_converged and plan.layers["2"].trace_converged


class Signal(nn.Module):
    """conv1d over a 1-D signal, then a linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3)
        self.head = nn.Linear(4 * 6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(torch.relu(self.conv(x)), 1))


def test_conv1d_is_left_alone_by_plan_validate_apply_and_export(tmp_path) -> None:
    import onnx

    from compress.apply.pipeline import ApplySpec, apply_
    from compress.data.source import TensorData
    from compress.export.onnx_qdq import export_onnx
    from compress.plan.recipe import plan_recipe
    from compress.prune.apply import prune_model_
    from compress.prune.records import PruneSettings
    from compress.quant.quantize import quantize_model_
    from compress.quant.records import QuantSettings
    from compress.recipe.check import check_against_model
    from compress.recipe.schema import Recipe

    torch.manual_seed(0)
    model = Signal().eval()
    x = torch.randn(16, 2, 8)
    plan = make_plan(model, curvature({"head": (1.0, 0.0)}, model), PlanSpec({"avg_bits": 8}, bits=(8, None)))
    assert list(plan.layers) == ["head"]  # the conv1d is not planned
    recipe = Recipe.from_dict(plan_recipe(plan, "user", "user", None))
    assert check_against_model(recipe, model) == []
    applied = Signal().eval()
    applied.load_state_dict(model.state_dict())
    apply_(applied, ApplySpec(recipe.quant_settings(["head"])), TensorData("x", (x,), None), None, None, 16)
    assert type(applied.conv) is nn.Conv1d and torch.equal(applied.conv.weight, model.conv.weight)
    path = export_onnx(applied, (x[:1],), tmp_path / "model.onnx")
    assert "Conv" in {n.op_type for n in onnx.load(path).graph.node}
    named = Recipe.from_dict({**recipe.to_dict(), "quantization": {"layers": {"conv": {"weight_bits": 8}}}})
    assert any("conv" in p and "Conv1d" in p for p in check_against_model(named, model))
    with pytest.raises(ConfigError, match="Conv1d"):
        quantize_model_(Signal(), {"conv": QuantSettings(8, None)}, [x])
    with pytest.raises(InputError, match="Conv1d"):
        prune_model_(Signal(), {"conv": PruneSettings(0.5)})
