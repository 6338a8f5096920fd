"""The plan's curvature: Gauss-Newton traces by default (positive semi-definite by construction,
equal to the Hessian blocks of a ReLU net), Lanczos only where a plan uses the spectrum; noisy
traces flagged on screen; whole layer names in the tables."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from compress.curvature.estimate import CurvatureSpec, estimate_curvature
from compress.curvature.result import Curvature, LayerCurvature
from compress.data.source import TensorData
from compress.pipeline.plan import PLAN_MAX_PROBES, PLAN_REL_ERROR, plan_curvature_spec, plan_inputs
from compress.plan.make import PlanSpec

BITS_ONLY = PlanSpec({"avg_bits": 4})


def test_the_plan_asks_for_gauss_newton_probes_and_lanczos_only_when_it_may_prune() -> None:
    bits = plan_curvature_spec(None, BITS_ONLY)
    assert (bits.method, bits.slq_runs, bits.trace.max_products, bits.trace.max_seconds, bits.trace.rel_error) == \
        ("gauss-newton", 0, PLAN_MAX_PROBES, None, PLAN_REL_ERROR)
    prunes = plan_curvature_spec(None, PlanSpec({"avg_bits": 4}, sparsities=(0.0, 0.5)))
    assert prunes.slq_runs == CurvatureSpec().slq_runs  # the whole-model sparsity limit needs the density
    assert plan_curvature_spec(None, PlanSpec({"avg_bits": 4}, patterns=("2:4",))).slq_runs > 0
    chosen = plan_curvature_spec(CurvatureSpec(method="hutchinson", max_samples=7), BITS_ONLY)
    assert chosen.method == "hutchinson" and chosen.max_samples is None  # explicit kept; all the plan's data


def relu_net_and_data() -> tuple[nn.Module, TensorData]:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    generator = torch.Generator().manual_seed(4)
    inputs = torch.randn(96, 6, generator=generator)
    return model, TensorData("relu", (inputs,), torch.randint(0, 3, (96,), generator=generator))


def test_plan_traces_are_the_relu_nets_hessian_blocks_and_never_negative() -> None:
    """Each layer's output is linear in that layer's weights: its Hessian block is its Gauss-Newton
    block, so the plan's default probes estimate the exact block traces of the dense Hessian."""
    model, data = relu_net_and_data()
    exact = estimate_curvature(model, data, CurvatureSpec(exact=True, batch_size=32))
    _, _, curvature = plan_inputs(model, data, spec=BITS_ONLY, curvature_spec=plan_curvature_spec(
        CurvatureSpec(batch_size=32), BITS_ONLY))
    assert curvature.method.startswith("gauss-newton") and curvature.top_eigenvalues == []  # no Lanczos
    for name, layer in curvature.layers.items():
        truth = exact.layers[name].trace
        assert layer.trace > 0 and truth > 0
        assert abs(layer.trace - truth) <= 3 * layer.trace_stderr + 1e-9, (name, layer.trace, truth, layer.trace_stderr)
        assert abs(layer.trace - truth) <= 0.1 * truth, (name, layer.trace, truth)


NOISY_FACTORIES = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem_convolution_of_the_network = nn.Conv2d(1, 3, 3)
        self.stage_four_downsample_projection = nn.Conv2d(3, 3, 1)
        self.classifier_head_fully_connected = nn.Linear(27, 3)

    def forward(self, x):
        h = torch.relu(self.stem_convolution_of_the_network(x))
        return self.classifier_head_fully_connected(torch.flatten(self.stage_four_downsample_projection(h), 1))


def model():
    return Net().eval()


def data():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(64, 1, 5, 5, generator=generator), torch.randint(0, 3, (64,), generator=generator)
"""


def curvature_file(path: Path, traces: dict[str, tuple[float, float, int]]) -> Path:
    layers = {name: LayerCurvature(t, s, n, 8) for name, (t, s, n) in traces.items()}
    curvature = Curvature(layers, sum(t for t, _, _ in traces.values()), 1.0, [], 8, 0.1, "ce", 1.0,
                          "hutchinson", False)
    path.write_text(json.dumps(curvature.to_dict()))
    return path


def test_unconverged_traces_are_flagged_on_screen_and_names_shown_whole(cli, factory_file, tmp_path: Path) -> None:
    source = factory_file(NOISY_FACTORIES, name="long_names.py")
    noisy = curvature_file(tmp_path / "curvature.json", {
        "stem_convolution_of_the_network": (-26.45, 70.0, 30),  # the sign is unknown: upper end priced
        "stage_four_downsample_projection": (4.0, 0.1, 12),
        "classifier_head_fully_connected": (9.0, 0.2, 84)})
    output, record = tmp_path / "plan.yaml", tmp_path / "plan.json"
    result = cli("plan", f"{source}:model", "--data", f"{source}:data", "--curvature", str(noisy),
                 "--budget", "avg_bits=4", "--bits", "2,4,8", "--sensitivity", "trace", "-o", str(output),
                 "--json", str(record))
    assert result.code == 0, result.err
    plan = json.loads(record.read_text())
    assert plan["unconverged"] == ["stem_convolution_of_the_network"]
    assert min(v for layer in plan["layers"].values() for v in layer["considered"].values()) >= 0
    flagged = [line for line in result.out.splitlines() if "traces unconverged" in line]
    assert flagged and "stem_convolution_of_the_network" in flagged[0] and "1 of 3" in flagged[0]
    for name in plan["layers"]:  # whole names, each on one line of the table
        assert any(name in line for line in result.out.splitlines()), (name, result.out)
    assert "…" not in result.out


@pytest.mark.parametrize("width", [40, 80])
def test_a_narrow_terminal_keeps_whole_layer_names(width: int) -> None:
    from rich.console import Console
    from rich.table import Table

    from compress.cli.tables import add_layer_column

    names = ["layer4.0.downsample.0", "layer4.1.conv2", "fc"]
    table = Table()
    add_layer_column(table, names)
    for column in ("weights", "trace", "choice", "predicted Δloss"):
        table.add_column(column, justify="right")
    for name in names:
        table.add_row(name, "2,359,296", "51.7 ± 62", "w4", "0.0048")
    console = Console(width=width, force_terminal=True, record=True)
    console.print(table)
    text = console.export_text()
    for name in names:
        assert any(name in line for line in text.splitlines()), text


def test_whole_plans_are_verified_by_default_only_where_reconstructing_them_is_cheap() -> None:
    from compress.pipeline.plan import VERIFY, VERIFY_MAX_INPUTS, with_default_verify

    narrow = nn.Sequential(nn.Linear(VERIFY_MAX_INPUTS, 4), nn.ReLU(), nn.Conv2d(4, 4, 3))
    wide = nn.Sequential(nn.Conv2d(512, 4, 3))  # 4,608 inputs per output, as ResNet-18's layer4
    assert with_default_verify(BITS_ONLY, narrow).verify == VERIFY
    assert with_default_verify(BITS_ONLY, wide).verify == 1
