"""Whole plans timed on the backend (``compress.plan.speed``): the activation patterns searched, and
the choice — the fastest plan faster than FP32 at every batch whose measured loss is within the
data's resolution of the best, else the float-speed (weight-only) plan. The backend is a stand-in
whose whole-model latency is a made-up function of the int8 layers, including an interaction the
per-layer table cannot see (a chain of int8 layers is faster than its parts), so every expectation
below is worked out by hand; nothing is timed."""

import numpy as np
import pytest
from torch import nn

from compress.plan.allocation import Allocation
from compress.plan.make import PlanEvidence, PlanSpec, make_plan
from compress.plan.settings import plan_settings, quant_rule
from compress.plan.speed import MAX_ENUMERATED, act_patterns, act_units, fastest_plan, pattern_mask
from compress.vocab.costs import LatencyCosts, signed_activations
from compress.vocab.options import LayerOption
from tests.helpers.curvature import curvature_for

W8, W8A8, W4, W4A8, FP32 = LayerOption(8), LayerOption(8, act_bits=8), LayerOption(4), LayerOption(4, act_bits=8), LayerOption(None)


class FakeLatency:
    """``PlanLatency`` whose ratios come from ``rule(int8 layers)``; records what it was asked."""

    backend, batch_sizes = "fake", (1, 32)

    def __init__(self, rule) -> None:
        self.rule, self.asked = rule, []

    def ratios(self, plans):
        self.asked.append(plans)
        return [self.rule(frozenset(n for n, o in plan.items() if o.act_bits)) for plan in plans]


class Losses:
    """A stand-in for ``SingleLayerLoss``: single-layer ΔL given; a whole plan's ΔL is their sum."""

    def __init__(self, losses) -> None:
        self.cache, self.channels, self.joints = dict(losses), None, []

    def measure_all(self, wanted) -> None:
        assert all(key in self.cache for key in wanted)

    def joint(self, options, act_signed=True) -> float:
        self.joints.append((dict(options), act_signed))
        return sum(self.cache[(n, o)] for n, o in options.items())


def chain_rule(int8: frozenset) -> dict[int, float]:
    """Layers 0 and 1 int8 together: 0.6× FP32; either alone pays a Q/DQ boundary: 1.2×; layer 2
    int8 adds 0.3 at batch 1 only (small layer, overhead-bound)."""
    ratio = 0.6 if {"0", "1"} <= int8 else (1.2 if int8 & {"0", "1"} else 1.0)
    return {1: ratio + (0.3 if "2" in int8 else 0.0), 32: ratio}


def _setting(losses=None):
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8))
    curvature = curvature_for(model, {"0": 1e-12, "1": 1e-12, "2": 1e-12})  # the measurements decide
    table = {n: {"fp32": 1.0, "weight-only": 1.0, "int8": 1.0} for n in "012"}
    base = {(n, o): 0.0 for n in "012" for o in (FP32,)}
    base.update({(n, W8): 0.001 for n in "012"} | {(n, W4): 0.004 for n in "012"})
    base.update({(n, W8A8): 0.002 for n in "012"} | {(n, W4A8): 0.005 for n in "012"})
    base.update(losses or {})
    return model, curvature, base, table


def _plan(rule, losses=None, resolution=0.01, budgets=None):
    model, curvature, base, table = _setting(losses)
    latency = FakeLatency(rule)
    evidence = PlanEvidence(measure=Losses(base), latency=LatencyCosts("ort-cpu", table), plan_latency=latency,
                            loss_resolution=resolution)
    spec = PlanSpec(budgets=budgets or {"avg_bits": 8.0}, bits=(4, 8, None), act_bits=(8, None))
    return make_plan(model, curvature, spec, evidence), latency, evidence


def test_the_fastest_plan_within_the_loss_resolution_is_chosen_with_uint8_activations_for_ort() -> None:
    plan, latency, evidence = _plan(chain_rule)
    chosen = {n: layer.option() for n, layer in plan.layers.items()}
    # 0 and 1 int8 together are fastest at both batches; 2 int8 would be slower at batch 1; among equal
    # speed the least loss (within the resolution w4 ties with w8 in loss, and the latency table too:
    # the least-loss one is kept): 8-bit weights, and layer 2 weight-only
    assert chosen == {"0": W8A8, "1": W8A8, "2": W8}
    assert [r["chosen"] for r in plan.speed_checked].count(True) == 1
    picked = next(r for r in plan.speed_checked if r["chosen"])
    assert picked["latency_vs_fp32"] == {1: 0.6, 32: 0.6} and picked["int8_layers"] == ["0", "1"]
    assert len(latency.asked) == 1 and len(latency.asked[0]) == 2 ** 3  # 3 units, every pattern, one timing run
    assert plan.act_signed is False and signed_activations("ort-cpu") is False
    assert all(signed is False for _, signed in evidence.measure.joints)  # measured as deployed


def test_a_faster_plan_beyond_the_loss_resolution_loses_to_a_slower_accurate_one() -> None:
    losses = {(n, o): 0.5 for n in "01" for o in (W8A8, W4A8)}  # int8 inputs of 0 and 1 hurt
    plan, _, _ = _plan(chain_rule, losses, resolution=0.01)
    assert all(layer.act_bits is None for layer in plan.layers.values())  # no faster plan is accurate enough
    plan, _, _ = _plan(chain_rule, losses, resolution=2.0)  # the data cannot tell them apart: speed wins
    assert {n for n, layer in plan.layers.items() if layer.act_bits} == {"0", "1"}


def test_never_slower_than_float_when_a_weight_only_plan_fits() -> None:
    def slow(int8):  # every int8 pattern slower than FP32 at batch 32
        return {1: 0.9, 32: 1.0 + 0.1 * len(int8)}

    plan, _, _ = _plan(slow, {(n, o): 0.0 for n in "012" for o in (W8A8, W4A8)})  # int8 looks free in loss
    assert all(layer.act_bits is None for layer in plan.layers.values())


def test_act_units_follow_ties_and_patterns_are_bounded() -> None:
    names = ["a", "b", "c", "d"]
    options = {n: [W8, W8A8] for n in names}
    allowed = np.ones((4, 2), dtype=bool)
    allowed[3, 1] = False  # d: weight-only only, not a unit
    units = act_units(names, options, allowed, [("a", "b")])
    assert units == [("a", "b"), ("c",)]
    patterns = act_patterns(units, frozenset({"c"}))
    assert patterns[0] == {"c"} and len(patterns) == 4 and set(patterns) == {frozenset(), frozenset({"a", "b"}),
                                                                              frozenset({"c"}), frozenset("abc")}
    mask = pattern_mask(names, options, 2, units, frozenset({"c"}))
    assert mask.tolist() == [[False, True], [False, True], [True, False], [False, False]]
    many = [(str(i),) for i in range(MAX_ENUMERATED + 3)]
    bounded = act_patterns(many, frozenset())
    assert len(bounded) == len(many) + 2  # the reference's pattern is the empty one: none, all, all-but-one


def test_fastest_plan_skips_patterns_the_budget_cannot_meet() -> None:
    from compress.errors import BudgetError

    allocations = {frozenset(): Allocation((0,), 0.0, {}), frozenset({"x"}): Allocation((1,), 0.0, {})}

    def solve(pattern):
        if pattern == frozenset({"y"}):
            raise BudgetError("over budget", constraint="avg_bits", reachable=9.0)
        return allocations[pattern]

    latency = FakeLatency(lambda int8: {1: 0.5 if int8 else 1.0})
    plans = {(0,): {"x": W8}, (1,): {"x": W8A8}}
    chosen, rows = fastest_plan([frozenset(), frozenset({"x"}), frozenset({"y"})], solve,
                                lambda a: frozenset({"x"}) if a.choices == (1,) else frozenset(),
                                lambda a: plans[a.choices], latency, lambda a: 0.0, allocations[frozenset()], 0.0, 0.0)
    assert chosen.choices == (1,) and len(rows) == 2


def test_plan_settings_write_uint8_activations_only_where_activations_are_quantized() -> None:
    assert quant_rule(W8A8, act_signed=False) == {"weight_bits": 8, "act_bits": 8, "act_signed": False}
    assert quant_rule(W8, act_signed=False) == {"weight_bits": 8, "act_bits": None}
    assert quant_rule(W8A8) == {"weight_bits": 8, "act_bits": 8}
    quantization, _ = plan_settings({"a": W8A8, "b": FP32}, act_signed=False)
    assert set(quantization) == {"a"} and quantization["a"].act_signed is False


@pytest.mark.parametrize("budget", [{"avg_bits": 8.0, "latency_ms": 10.0}])
def test_a_user_latency_budget_keeps_the_table_and_times_nothing(budget) -> None:
    plan, latency, _ = _plan(chain_rule, budgets=budget)
    assert latency.asked == [] and plan.speed_checked is None
