"""A backend-legal plan by default: with a latency table and no latency budget the plan is never
slower than FP32 in that table, and of plans of equal predicted loss the faster wins. Synthetic
cost tables and measured losses (fast, exact expectations worked out by hand below)."""

import numpy as np
import pytest
from torch import nn

from compress.pipeline.plan import PlanMeasurements, default_act_bits, plan_spec
from compress.plan.allocation import allocate
from compress.plan.make import PlanEvidence, PlanSpec, make_plan
from compress.vocab.costs import LatencyCosts
from compress.vocab.options import LayerOption
from tests.helpers.curvature import curvature_for


class FixedLoss:
    """A stand-in for ``SingleLayerLoss`` whose every single-layer ΔL is given."""

    def __init__(self, losses: dict[tuple[str, LayerOption], float]) -> None:
        self.cache = dict(losses)
        self.channels = None

    def measure_all(self, wanted) -> None:
        assert all(key in self.cache for key in wanted)


W8, W8A8 = LayerOption(8), LayerOption(8, act_bits=8)
FP32 = LayerOption(None)


def _setting():
    """Two layers; int8 kernels: layer a 2× faster than float, layer b 2× slower (a layer too small
    for its Q/DQ overhead); weight-only runs as float (the fold form). Measured ΔL: equal for a's
    two 8-bit options, lower for b with int8 activations (so without the bound b takes its slow one)."""
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    latency = LatencyCosts("ort-cpu", {"0": {"fp32": 1.0, "weight-only": 1.0, "int8": 0.5},
                                       "1": {"fp32": 1.0, "weight-only": 1.0, "int8": 2.0}})
    losses = {("0", W8): 0.01, ("0", W8A8): 0.01, ("1", W8): 0.002, ("1", W8A8): 0.001,
              ("0", FP32): 0.0, ("1", FP32): 0.0}
    curvature = curvature_for(model, {"0": 1e-12, "1": 1e-12})  # Ω ≪ measured: the measurements decide
    evidence = PlanEvidence(measure=FixedLoss(losses), latency=latency)
    return model, curvature, evidence


def test_without_a_latency_budget_the_plan_is_never_slower_than_float() -> None:
    model, curvature, evidence = _setting()
    spec = PlanSpec(budgets={"avg_bits": 8.0}, bits=(8, None), act_bits=(8, None))
    plan = make_plan(model, curvature, spec, evidence)
    # b's int8 option would make Σ latency 0.5 + 2 > 2 (= Σ FP32); a's two options tie on ΔL, the faster wins
    assert (plan.layers["0"].option(), plan.layers["1"].option()) == (W8A8, W8)
    assert plan.totals["latency_ms"] == pytest.approx(1.5)
    assert plan.float_latency_ms == pytest.approx(2.0)
    assert plan.budgets == {"avg_bits": 8.0}  # the implicit bound is recorded apart


def test_a_user_latency_budget_replaces_the_float_bound() -> None:
    model, curvature, evidence = _setting()
    spec = PlanSpec(budgets={"avg_bits": 8.0, "latency_ms": 3.0}, bits=(8, None), act_bits=(8, None))
    plan = make_plan(model, curvature, spec, evidence)
    assert (plan.layers["0"].option(), plan.layers["1"].option()) == (W8A8, W8A8)  # least ΔL, within 3 ms
    assert plan.totals["latency_ms"] == pytest.approx(2.5)


def test_ties_go_to_the_faster_allocation_and_only_ties() -> None:
    omega = np.array([[1.0, 1.0, 0.5], [2.0, 2.0, 2.0]])
    latency = np.array([[3.0, 1.0, 9.0], [5.0, 4.0, 6.0]])
    chosen = allocate(omega, {}, {}, tie_break=latency)
    assert chosen.choices == (2, 1)  # layer 0: least Ω wins over speed; layer 1: a three-way tie, fastest
    assert allocate(omega, {}, {}).objective == chosen.objective
    # a loss difference the data cannot resolve is a tie; one it can is not
    assert allocate(omega, {}, {}, tie_break=latency, tie_tolerance=0.6).choices == (1, 1)
    assert allocate(omega, {}, {}, tie_break=latency, tie_tolerance=0.4).choices == (2, 1)


def test_integer_backends_consider_int8_activations_by_default() -> None:
    assert default_act_bits("ort-cpu", "hybrid") == (8, None)
    assert default_act_bits(None, "hybrid") == (None,)
    assert default_act_bits("ort-cpu", "trace") == (None,)  # activation options are priced by measurement
    assert plan_spec({"avg_bits": 8}, PlanMeasurements(backend="ort-cpu")).act_bits == (8, None)
    assert plan_spec({"avg_bits": 8}, PlanMeasurements(backend="ort-cpu"), act_bits=(None,)).act_bits == (None,)


def test_activation_bits_only_with_quantized_weights() -> None:
    from compress.plan.make import candidate_options

    options = candidate_options(PlanSpec(budgets={}, bits=(8, None), act_bits=(8, None)), (8, 8))
    assert set(options) == {W8, W8A8, FP32}  # no float-weight layer behind unfused Q/DQ
