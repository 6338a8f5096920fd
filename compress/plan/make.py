"""The plan stage: ``make_plan(model, curvature, spec) -> Plan``.

Every Linear / Conv layer gets one option (weight bits, sparsity, pattern) minimising the total
predicted loss increase Σ Ω (``sensitivity.py``) under the budgets, solved exactly
(``allocation.py``). Other parameters (biases, norms, embeddings) stay float and count in size.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import numpy as np
from torch import nn

from compress.curvature.result import Curvature
from compress.errors import InputError
from compress.plan.allocation import Allocation, allocate, best_allocations
from compress.plan.latency_table import LatencyTable
from compress.plan.measured import SingleLayerLoss
from compress.plan.costs import FLOAT_BITS, bops, effective_bits, storage_bits
from compress.plan.overrides import Override, restrict_options
from compress.plan.sensitivity import LayerOption, sensitivity
from compress.plan.ties import tie_tables

BUDGETS = ("avg_bits", "size_mb", "gbops", "latency_ms")
SPARSITY_LIMIT_MODES = ("exclude", "penalise", "off")


@dataclass(frozen=True)
class PlanSpec:
    budgets: dict[str, float]
    bits: tuple[int | None, ...] = (2, 3, 4, 8, None)
    sparsities: tuple[float, ...] = (0.0,)
    patterns: tuple[str, ...] = ("unstructured",)
    act_bits: tuple[int | None, ...] = (None,)
    overrides: tuple[Override, ...] = ()
    sparsity_limit: str = "exclude"  # what to do with options pruning past a layer's limit
    verify: int = 1  # with measurements: the best of this many least-Ω allocations by actual loss


@dataclass(frozen=True)
class PlanEvidence:
    """What the planner measured besides the curvature (each part optional)."""

    measure: SingleLayerLoss | None = None  # single-layer ΔL, measured lazily
    sparsity_limits: dict[str, float] | None = None  # per-layer pruned-fraction limit (limits.py)
    loss_tolerance: float | None = None  # ε of the limits
    model_sparsity_limit: float | None = None
    macs: dict[str, float] | None = None  # per-sample MACs (macs.py), needed for gbops
    ties: list[tuple[str, ...]] | None = None  # residual groups (ties.py); None: not traced
    latency: LatencyTable | None = None  # per-layer latency on the backend, needed for latency_ms


@dataclass(frozen=True)
class LayerPlan:
    weight_bits: int | None
    sparsity: float
    pattern: str
    trace: float
    trace_stderr: float
    num_weights: int
    predicted_delta_loss: float
    storage_bits: float
    act_bits: int | None = None
    sparsity_limit: float | None = None
    latency_ms: float | None = None  # isolated-layer median on the plan's backend
    considered: dict[str, float] = field(default_factory=dict)  # label -> max(Ω, measured if measured); inf: excluded

    def option(self) -> LayerOption:
        return LayerOption(self.weight_bits, self.sparsity, self.pattern, self.act_bits)


@dataclass(frozen=True)
class Plan:
    layers: dict[str, LayerPlan]
    budgets: dict[str, float]
    totals: dict[str, float]
    predicted_delta_loss: float
    solver: str = "scipy.optimize.milp (HiGHS), optimal"
    tied_groups: list[tuple[str, ...]] | None = None
    loss_tolerance: float | None = None
    model_sparsity_limit: float | None = None
    measured_options: int = 0  # single-layer measurements made (lazily) for this plan and earlier ones
    verified: list[dict] | None = None  # the least-ΣΩ allocations with their measured whole-plan ΔL

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def plannable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Modules whose weight the planner compresses: Linear and Conv layers."""
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds)}


def candidate_options(spec: PlanSpec, weight_shape: tuple[int, ...]) -> list[LayerOption]:
    """Every bits × activation bits × (sparsity, pattern) combination the layer can take (2:4
    needs a reduction size divisible by 4 and always prunes half)."""
    reduction = int(np.prod(weight_shape[1:]))
    options = []
    for bits, act, sparsity, pattern in itertools.product(spec.bits, spec.act_bits, spec.sparsities, spec.patterns):
        if pattern == "2:4":
            if reduction % 4 == 0:
                options.append(LayerOption(bits, 0.5, "2:4", act))
        elif sparsity == 0:
            options.append(LayerOption(bits, act_bits=act))
        else:
            options.append(LayerOption(bits, sparsity, pattern, act))
    return list(dict.fromkeys(options))


def layer_options(model: nn.Module, spec: PlanSpec) -> dict[str, list[LayerOption]]:
    """The candidate options of every plannable layer, in the order the plan indexes them."""
    return {name: candidate_options(spec, tuple(m.weight.shape)) for name, m in plannable_layers(model).items()}


def predicted_loss(layer: nn.Module, info, option: LayerOption, spec: PlanSpec, evidence: PlanEvidence,
                   limit: float | None) -> float:
    """The second-order Ω of one option with the sparsity-limit rule applied; inf = excluded."""
    omega = sensitivity(layer.weight, info.trace, info.num_params, option)
    if limit is None or option.sparsity <= limit or spec.sparsity_limit == "off":
        return omega
    if spec.sparsity_limit == "exclude":
        return np.inf
    return max(omega, evidence.loss_tolerance * option.sparsity / max(limit, 1e-12))  # ε at the limit, linear past it


def make_plan(model: nn.Module, curvature: Curvature, spec: PlanSpec, evidence: PlanEvidence = PlanEvidence()) -> Plan:
    """The optimal allocation under ``spec.budgets``, the overrides and the residual ties, with
    each option's predicted loss max(Ω, measured ΔL) when ``evidence.measure`` is given (measured
    lazily: solve, measure the chosen options, solve again until every chosen option is measured)."""
    layers = plannable_layers(model)
    missing = [name for name in layers if name not in curvature.layers]
    if missing:
        raise InputError(f"the curvature has no trace for layer {missing[0]}; compute it for this model")
    names = list(layers)
    options = layer_options(model, spec)
    if evidence.measure is None and any(o.act_bits for opts in options.values() for o in opts):
        raise InputError("activation-bit options need measured sensitivities; use --sensitivity hybrid")
    allowed = restrict_options(options, spec.overrides)
    width = max(len(o) for o in options.values())
    omega = np.full((len(names), width), np.inf)
    for row, name in enumerate(names):
        limit = None if evidence.sparsity_limits is None else evidence.sparsity_limits[name]
        for column, option in enumerate(options[name]):
            omega[row, column] = predicted_loss(layers[name], curvature.layers[name], option, spec, evidence, limit)
    _require_costs(spec, evidence)
    costs = cost_tables(model, layers, options, evidence, width)
    act = _table_by_layer(options, names, width, lambda n, o: o.act_bits or 0)
    ties = tie_tables(evidence.ties or [], names, act)
    disallowed = _table_by_layer(options, names, width, lambda n, o: not allowed[n][options[n].index(o)]) > 0
    while True:
        omega = _with_measurements(omega, names, options, evidence.measure)
        allocation = allocate(np.where(disallowed, np.inf, omega), {k: costs[k] for k in spec.budgets},
                              spec.budgets, ties)
        chosen = [(name, options[name][column]) for name, column in zip(names, allocation.choices)]
        if evidence.measure is None or all(key in evidence.measure.cache for key in chosen):
            break
        evidence.measure.measure_all(chosen)
    verified = None
    if evidence.measure is not None and spec.verify > 1:
        candidates = best_allocations(np.where(disallowed, np.inf, omega), {k: costs[k] for k in spec.budgets},
                                      spec.budgets, ties, spec.verify)
        allocation, verified = _verified(candidates, names, options, evidence.measure)
    return _plan(names, layers, options, curvature, spec, evidence, omega, costs, allocation, verified)


def _verified(candidates: list[Allocation], names: list[str], options: dict[str, list[LayerOption]],
              measure: SingleLayerLoss) -> tuple[Allocation, list[dict]]:
    """The candidate whose whole-plan loss increase, measured on the calibration data, is least.

    Per-layer predictions add up; real damage need not (at 2.5 bits on mnist-cnn the 2-bit head
    dominates and extra bits elsewhere do not reduce the loss), so the few best allocations by
    ΣΩ are measured as wholes and the truly best is kept."""
    rows = []
    for allocation in candidates:
        chosen = {name: options[name][column] for name, column in zip(names, allocation.choices)}
        rows.append({"choices": {n: o.label() for n, o in chosen.items()},
                     "predicted_delta_loss": allocation.objective, "measured_delta_loss": measure.joint(chosen)})
    best = min(range(len(rows)), key=lambda i: rows[i]["measured_delta_loss"])
    return candidates[best], rows


def _with_measurements(omega: np.ndarray, names: list[str], options: dict[str, list[LayerOption]],
                       measure: SingleLayerLoss | None) -> np.ndarray:
    """max(Ω, measured ΔL) wherever a measurement exists (excluded options stay inf)."""
    if measure is None:
        return omega
    result = omega.copy()
    for row, name in enumerate(names):
        for column, option in enumerate(options[name]):
            if (name, option) in measure.cache:
                result[row, column] = max(result[row, column], measure.cache[(name, option)])
    return result


def cost_tables(model: nn.Module, layers: dict[str, nn.Module], options: dict[str, list[LayerOption]],
                evidence: PlanEvidence, width: int) -> dict[str, np.ndarray]:
    """Per (layer, option) contribution to every budget; float parameters outside the planned
    weights are spread evenly over the layers so size totals count them."""
    names = list(layers)
    weights = {n: layers[n].weight for n in names}
    planned = sum(w.numel() for w in weights.values())
    fixed_bits = FLOAT_BITS * (sum(p.numel() for p in model.parameters()) - planned)
    storage = _table_by_layer(options, names, width, lambda n, o: storage_bits(weights[n].numel(), weights[n].shape[0], o))
    tables = {
        "storage_bits": storage,
        "avg_bits": _table_by_layer(options, names, width, lambda n, o: effective_bits(weights[n].numel(), o)
                                    * weights[n].numel() / planned),
        "size_mb": (storage + fixed_bits / len(names)) / 8e6,
    }
    if evidence.latency is not None:
        tables["latency_ms"] = _table_by_layer(options, names, width, evidence.latency.latency)
    if evidence.macs is not None:
        tables["gbops"] = _table_by_layer(options, names, width, lambda n, o: bops(evidence.macs[n], o) / 1e9)
    return tables


def _table_by_layer(options: dict[str, list[LayerOption]], names: list[str], width: int, value) -> np.ndarray:
    """table[l, o] = value(name of l, option o); columns past a layer's options stay 0."""
    table = np.zeros((len(names), width))
    for row, name in enumerate(names):
        for column, option in enumerate(options[name]):
            table[row, column] = value(name, option)
    return table


def _require_costs(spec: PlanSpec, evidence: PlanEvidence) -> None:
    if "gbops" in spec.budgets and evidence.macs is None:
        raise InputError("a gbops budget needs the layers' MACs; they are measured on the calibration data")
    if "latency_ms" in spec.budgets and evidence.latency is None:
        raise InputError("a latency_ms budget needs a per-layer latency table; give --backend ort-cpu")


def _plan(names, layers, options, curvature, spec, evidence, omega, costs, allocation, verified) -> Plan:
    rows = np.arange(len(names))
    columns = list(allocation.choices)
    plan_layers = {}
    for row, (name, column) in enumerate(zip(names, columns)):
        option = options[name][column]
        plan_layers[name] = LayerPlan(
            weight_bits=option.bits, sparsity=option.sparsity, pattern=option.pattern, act_bits=option.act_bits,
            trace=curvature.layers[name].trace, trace_stderr=curvature.layers[name].trace_stderr,
            num_weights=layers[name].weight.numel(), predicted_delta_loss=float(omega[row, column]),
            storage_bits=float(costs["storage_bits"][row, column]),
            sparsity_limit=None if evidence.sparsity_limits is None else evidence.sparsity_limits[name],
            latency_ms=float(costs["latency_ms"][row, column]) if "latency_ms" in costs else None,
            considered={o.label(): float(omega[row, i]) for i, o in enumerate(options[name])},
        )
    totals = {key: float(table[rows, columns].sum()) for key, table in costs.items() if key != "storage_bits"}
    return Plan(plan_layers, dict(spec.budgets), totals, allocation.objective, tied_groups=evidence.ties,
                loss_tolerance=evidence.loss_tolerance, model_sparsity_limit=evidence.model_sparsity_limit,
                measured_options=0 if evidence.measure is None else len(evidence.measure.cache),
                verified=verified)


def parse_budget(text: str) -> tuple[str, float]:
    """``avg_bits=4`` -> ("avg_bits", 4.0), with a one-line error for anything else."""
    key, sep, value = text.partition("=")
    if not sep or key not in BUDGETS:
        raise InputError(f"bad budget {text!r}; write NAME=VALUE with NAME one of {', '.join(BUDGETS)}")
    try:
        number = float(value)
    except ValueError:
        raise InputError(f"bad budget {text!r}: {value!r} is not a number") from None
    if number <= 0:
        raise InputError(f"bad budget {text!r}: it must be positive")
    return key, number
