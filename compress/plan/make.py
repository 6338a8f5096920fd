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
from compress.errors import UserError
from compress.plan.allocation import allocate
from compress.plan.costs import FLOAT_BITS, effective_bits, storage_bits
from compress.plan.sensitivity import LayerOption, sensitivity

BUDGETS = ("avg_bits", "size_mb")


@dataclass(frozen=True)
class PlanSpec:
    budgets: dict[str, float]
    bits: tuple[int | None, ...] = (2, 3, 4, 8, None)
    sparsities: tuple[float, ...] = (0.0,)
    patterns: tuple[str, ...] = ("unstructured",)


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
    considered: dict[str, float] = field(default_factory=dict)  # option label -> Ω


@dataclass(frozen=True)
class Plan:
    layers: dict[str, LayerPlan]
    budgets: dict[str, float]
    totals: dict[str, float]
    predicted_delta_loss: float
    solver: str = "scipy.optimize.milp (HiGHS), optimal"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def plannable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Modules whose weight the planner compresses: Linear and Conv layers."""
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds)}


def candidate_options(spec: PlanSpec, weight_shape: tuple[int, ...]) -> list[LayerOption]:
    """Every bits × (sparsity, pattern) combination the layer can take (2:4 needs a reduction
    size divisible by 4 and always prunes half)."""
    reduction = int(np.prod(weight_shape[1:]))
    options = []
    for bits, sparsity, pattern in itertools.product(spec.bits, spec.sparsities, spec.patterns):
        if pattern == "2:4":
            if reduction % 4 == 0:
                options.append(LayerOption(bits, 0.5, "2:4"))
        elif sparsity == 0:
            options.append(LayerOption(bits))
        else:
            options.append(LayerOption(bits, sparsity, pattern))
    return list(dict.fromkeys(options))


def layer_options(model: nn.Module, spec: PlanSpec) -> dict[str, list[LayerOption]]:
    """The candidate options of every plannable layer, in the order the plan indexes them."""
    return {name: candidate_options(spec, tuple(m.weight.shape)) for name, m in plannable_layers(model).items()}


def make_plan(model: nn.Module, curvature: Curvature, spec: PlanSpec,
              measured: dict[str, list[float]] | None = None) -> Plan:
    """The optimal allocation under ``spec.budgets``. With ``measured`` (single-layer loss changes
    per option, ``measured.py``) each option's predicted increase is max(Ω, measured)."""
    layers = plannable_layers(model)
    missing = [name for name in layers if name not in curvature.layers]
    if missing:
        raise UserError(f"the curvature has no trace for layer {missing[0]}; compute it for this model")
    names = list(layers)
    options = layer_options(model, spec)
    width = max(len(o) for o in options.values())
    omega = np.full((len(names), width), np.inf)
    size_bits = np.zeros_like(omega)
    avg_bits = np.zeros_like(omega)
    for row, name in enumerate(names):
        weight, info = layers[name].weight, curvature.layers[name]
        for column, option in enumerate(options[name]):
            omega[row, column] = sensitivity(weight, info.trace, info.num_params, option)
            if measured is not None:
                omega[row, column] = max(omega[row, column], measured[name][column])
            size_bits[row, column] = storage_bits(weight.numel(), weight.shape[0], option)
            avg_bits[row, column] = effective_bits(weight.numel(), option) * weight.numel()
    planned_weights = sum(layers[n].weight.numel() for n in names)
    fixed_bits = FLOAT_BITS * (sum(p.numel() for p in model.parameters()) - planned_weights)
    costs = {"avg_bits": avg_bits / planned_weights, "size_mb": (size_bits + fixed_bits / len(names)) / 8e6}
    allocation = allocate(omega, {k: costs[k] for k in spec.budgets}, spec.budgets)
    chosen = {name: options[name][c] for name, c in zip(names, allocation.choices)}
    plan_layers = {
        name: LayerPlan(
            weight_bits=option.bits, sparsity=option.sparsity, pattern=option.pattern,
            trace=curvature.layers[name].trace, trace_stderr=curvature.layers[name].trace_stderr,
            num_weights=layers[name].weight.numel(), predicted_delta_loss=float(omega[row, column]),
            storage_bits=float(size_bits[row, column]),
            considered={o.label(): float(omega[row, i]) for i, o in enumerate(options[name])},
        )
        for row, ((name, option), column) in enumerate(zip(chosen.items(), allocation.choices))
    }
    rows = np.arange(len(names))
    totals = {key: float(table[rows, list(allocation.choices)].sum()) for key, table in costs.items()}
    return Plan(plan_layers, dict(spec.budgets), totals, allocation.objective)


def parse_budget(text: str) -> tuple[str, float]:
    """``avg_bits=4`` -> ("avg_bits", 4.0), with a one-line error for anything else."""
    key, sep, value = text.partition("=")
    if not sep or key not in BUDGETS:
        raise UserError(f"bad budget {text!r}; write NAME=VALUE with NAME one of {', '.join(BUDGETS)}")
    try:
        number = float(value)
    except ValueError:
        raise UserError(f"bad budget {text!r}: {value!r} is not a number") from None
    if number <= 0:
        raise UserError(f"bad budget {text!r}: it must be positive")
    return key, number
