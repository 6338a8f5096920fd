"""Planner constraints beyond the budgets: overrides, residual ties, BOPs, sparsity limits, sweeps."""

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from compress.errors import BudgetError, InputError
from compress.plan.allocation import allocate
from compress.plan.frontier import parse_sweep, sweep
from compress.data.source import TensorData
from compress.plan.macs import layer_macs
from compress.plan.measured import SingleLayerLoss
from compress.plan.make import PlanEvidence, PlanSpec, make_plan
from compress.plan.overrides import parse_override
from compress.plan.ties import residual_groups, tie_tables
from tests.helpers.curvature import curvature_for


class Residual(nn.Module):
    """a → relu → (b, c) → b + c → d: b and c feed one add, so they are tied."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c, self.d = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        return self.d(torch.relu(self.b(h) + self.c(h)))


def residual_setup():
    torch.manual_seed(0)
    model = Residual()
    return model, curvature_for(model, {"a": 1.0, "b": 50.0, "c": 0.1, "d": 1.0})


def test_residual_groups_of_the_builtin_cnn_and_a_toy() -> None:
    from compress.models.mnist_cnn import MnistCNN

    assert residual_groups(Residual(), ["a", "b", "c", "d"]) == [("b", "c")]
    cnn_layers = ["stem.0", "conv.0", "block.dw.0", "block.pw.0", "head"]
    assert residual_groups(MnistCNN(), cnn_layers) == [("block.pw.0", "conv.0")]


def test_ties_force_equal_activation_bits_and_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    act = np.array([[8, 0, 8, 0]] * 3, dtype=float)
    for _ in range(20):
        omega, cost = rng.random((3, 4)), rng.random((3, 4))
        budget = float(cost.min(1).sum() + rng.random() * (cost.max(1).sum() - cost.min(1).sum()))
        ties = tie_tables([("0", "2")], ["0", "1", "2"], act)
        best = min((c for c in itertools.product(range(4), repeat=3)
                    if cost[range(3), c].sum() <= budget and act[0, c[0]] == act[2, c[2]]),
                   key=lambda c: omega[range(3), c].sum(), default=None)
        if best is None:
            with pytest.raises(BudgetError):
                allocate(omega, {"size": cost}, {"size": budget}, ties)
            continue
        got = allocate(omega, {"size": cost}, {"size": budget}, ties)
        assert act[0, got.choices[0]] == act[2, got.choices[2]]
        assert got.objective == pytest.approx(omega[range(3), best].sum(), rel=1e-9)


def test_overrides_restrict_choices_with_exact_name_before_pattern() -> None:
    model, curvature = residual_setup()
    spec = PlanSpec(budgets={"avg_bits": 5.0}, bits=(2, 4, 8, None),
                    overrides=(parse_override("re:[bc]=w2"), parse_override("b=fp32|w8")))
    plan = make_plan(model, curvature, spec)
    assert plan.layers["c"].weight_bits == 2  # the pattern
    assert plan.layers["b"].weight_bits in (8, None)  # the exact name wins over the pattern
    with pytest.raises(InputError, match="matches no plannable layer"):
        make_plan(model, curvature, PlanSpec(budgets={"avg_bits": 3.0}, overrides=(parse_override("nope=w8"),)))
    with pytest.raises(InputError, match="not a candidate"):
        make_plan(model, curvature, PlanSpec(budgets={"avg_bits": 3.0}, overrides=(parse_override("a=w5"),)))
    with pytest.raises(InputError, match="bad override"):
        parse_override("a")


def test_macs_and_the_gbops_budget() -> None:
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, groups=8, padding=1))
    macs = layer_macs(conv, (torch.randn(2, 3, 10, 10),), ["0", "1"])
    assert macs == {"0": 8 * 3 * 9 * 100, "1": 8 * 1 * 9 * 100}
    model, curvature = residual_setup()
    macs = layer_macs(model, (torch.randn(4, 8),), ["a", "b", "c", "d"])
    assert macs == {"a": 128, "b": 256, "c": 256, "d": 64}
    float_gbops = sum(macs.values()) * 32 * 32 / 1e9
    spec = PlanSpec(budgets={"gbops": float_gbops / 10}, bits=(2, 4, 8, None), act_bits=(8, None))
    generator = torch.Generator().manual_seed(0)
    data = TensorData("x", (torch.randn(32, 8, generator=generator),), torch.randint(0, 4, (32,), generator=generator))
    measure = SingleLayerLoss(model, data, "ce", batch_size=16)
    plan = make_plan(model, curvature, spec, PlanEvidence(measure=measure, macs=macs, ties=[("b", "c")]))
    assert plan.totals["gbops"] <= float_gbops / 10 + 1e-15
    assert plan.layers["b"].act_bits == plan.layers["c"].act_bits
    with pytest.raises(InputError, match="gbops budget needs"):
        make_plan(model, curvature, PlanSpec(budgets={"gbops": 1.0}))


def test_options_past_the_sparsity_limit_are_excluded_or_penalised() -> None:
    model, curvature = residual_setup()
    limits = {"a": 0.3, "b": 0.3, "c": 0.3, "d": 0.3}
    evidence = PlanEvidence(sparsity_limits=limits, loss_tolerance=0.01)
    spec = PlanSpec(budgets={"avg_bits": 2.0}, bits=(2, 4, 8), sparsities=(0.0, 0.25, 0.5, 0.75))
    plan = make_plan(model, curvature, spec, evidence)
    assert all(layer.sparsity <= 0.3 and layer.sparsity_limit == 0.3 for layer in plan.layers.values())
    assert plan.layers["a"].considered["w2+s0.5"] == np.inf
    penalised = make_plan(model, curvature, replace(spec, sparsity_limit="penalise"), evidence)
    assert penalised.layers["a"].considered["w2+s0.75"] >= 0.01 * 0.75 / 0.3


def test_sweep_frontier_is_monotone_and_lists_infeasible_values() -> None:
    model, curvature = residual_setup()
    name, values = parse_sweep("avg_bits=1:8:8", ("avg_bits",))
    frontier = sweep(lambda v: make_plan(model, curvature, PlanSpec(budgets={name: v})), name, values)
    assert frontier.infeasible == [1.0]  # below 2 bits nothing fits
    losses = [p.predicted_delta_loss for p in frontier.points]
    assert all(later <= earlier + 1e-15 for earlier, later in zip(losses, losses[1:]))
    assert all(p.totals["avg_bits"] <= p.budget + 1e-9 for p in frontier.points)
    with pytest.raises(InputError, match="bad --sweep"):
        parse_sweep("avg_bits=4:2:3", ("avg_bits",))
