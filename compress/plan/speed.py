"""The fastest plan on the backend, by timing whole plans, among those as good as the best.

On an integer backend (ONNX Runtime CPU) a plan's speed is decided by which layers run int8
activations: weights of ≤ 8 bits run on the same int8 kernels, and weight-only layers run as float
(the exporter's fold form). A per-layer latency table sums isolated times and misses the Q/DQ paid
where int8 meets float and the fusion of int8 chains (``compress.backends.ort.plan_latency``), so
here the planner picks *activation patterns* and has the backend time the resulting plans whole.

Units are the layers that choose int8 or float inputs together: each residual tie group and every
other layer offered both. Patterns: all 2^U subsets of units for U ≤ ``MAX_ENUMERATED``, else a
bounded set (the loss-optimal plan's own pattern, all int8, none, and all int8 but one unit: U + 3).
Each pattern is solved exactly under the budgets (``solve``: the least predicted loss with that
pattern), every distinct plan is timed whole against FP32 at each batch size (one alternating run),
and then, fastest first (geometric mean of latency ÷ FP32 over the batch sizes), the first plan that
is faster than FP32 at every batch size and whose measured loss change is within the data's loss
resolution of the loss-optimal plan's is chosen. If none is, the all-float-activation pattern —
float speed by construction — is chosen when the budget admits it, else the loss-optimal plan.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable

import numpy as np

from compress.errors import BudgetError
from compress.plan.allocation import Allocation
from compress.vocab.costs import PlanLatency
from compress.vocab.options import LayerOption

MAX_ENUMERATED = 5  # units enumerated exhaustively (2^5 = 32 plans at most)


@dataclass(frozen=True)
class SpeedCandidate:
    """One activation pattern's best plan and what was measured of it."""

    int8_layers: tuple[str, ...]
    allocation: Allocation
    ratios: dict[int, float]  # batch size -> latency ÷ FP32 latency
    measured_delta_loss: float | None = None

    def speed(self) -> float:
        """Geometric mean over batch sizes of latency ÷ FP32 latency (lower is faster)."""
        return float(np.exp(np.mean(np.log(list(self.ratios.values())))))

    def faster_than_float(self) -> bool:
        return all(r < 1.0 for r in self.ratios.values())

    def to_dict(self, chosen: bool) -> dict:
        return {"int8_layers": list(self.int8_layers), "latency_vs_fp32": dict(self.ratios),
                "predicted_delta_loss": self.allocation.objective, "measured_delta_loss": self.measured_delta_loss,
                "chosen": chosen}


def act_units(names: list[str], options: dict[str, list[LayerOption]], allowed: np.ndarray,
              ties: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Groups of layers choosing int8 vs float activations together: the tied residual groups and
    each other layer that has both an int8-input and a float-input option allowed."""
    def both(name: str) -> bool:
        row = allowed[names.index(name)]
        kinds = {options[name][c].act_bits is not None for c in range(len(options[name])) if row[c]}
        return kinds == {True, False}

    tied = {n for group in ties for n in group}
    units = [tuple(g) for g in ties if any(both(n) for n in g)]
    return units + [(n,) for n in names if n not in tied and both(n)]


def act_patterns(units: list[tuple[str, ...]], reference: frozenset[str]) -> list[frozenset[str]]:
    """Sets of int8-input layers to try (module docstring), the reference's own pattern first."""
    own = frozenset(n for unit in units for n in unit if n in reference)
    if len(units) <= MAX_ENUMERATED:
        subsets = itertools.chain.from_iterable(itertools.combinations(units, k) for k in range(len(units) + 1))
    else:
        everything = tuple(units)
        subsets = [(), everything, *(tuple(u for u in units if u != left) for left in units)]
    patterns = [frozenset(n for unit in subset for n in unit) for subset in subsets]
    return list(dict.fromkeys([own, *patterns]))


def pattern_mask(names: list[str], options: dict[str, list[LayerOption]], width: int,
                 units: list[tuple[str, ...]], int8: frozenset[str]) -> np.ndarray:
    """mask[l, o] = True where option o of layer l disagrees with the pattern (layers outside
    every unit are left free)."""
    in_units = {n for unit in units for n in unit}
    mask = np.zeros((len(names), width), dtype=bool)
    for row, name in enumerate(names):
        if name in in_units:
            for column, option in enumerate(options[name]):
                mask[row, column] = (option.act_bits is not None) != (name in int8)
    return mask


def fastest_plan(patterns: list[frozenset[str]], solve: Callable[[frozenset[str]], Allocation],
                 int8_of: Callable[[Allocation], frozenset[str]], plan_of: Callable[[Allocation], dict[str, LayerOption]],
                 latency: PlanLatency, joint: Callable[[Allocation], float], reference: Allocation,
                 reference_loss: float, resolution: float) -> tuple[Allocation, list[dict]]:
    """The chosen allocation (module docstring) and one record per timed candidate."""
    allocations = {}
    for pattern in patterns:
        try:
            allocation = solve(pattern)
        except BudgetError:
            continue  # the pattern cannot meet the budgets
        allocations.setdefault(allocation.choices, allocation)
    timed = list(allocations.values())
    ratios = latency.ratios([plan_of(a) for a in timed])
    candidates = [SpeedCandidate(tuple(sorted(int8_of(a))), a, r) for a, r in zip(timed, ratios)]
    chosen = None
    for index in sorted(range(len(candidates)), key=lambda i: candidates[i].speed()):
        candidate = candidates[index]
        if not candidate.faster_than_float():
            continue
        loss = reference_loss if candidate.allocation.choices == reference.choices else joint(candidate.allocation)
        candidates[index] = candidate = SpeedCandidate(candidate.int8_layers, candidate.allocation, candidate.ratios, loss)
        if loss <= reference_loss + resolution:
            chosen = candidate.allocation
            break
    if chosen is None:
        float_speed = [c.allocation for c in candidates if not c.int8_layers]
        chosen = float_speed[0] if float_speed else reference
    return chosen, [c.to_dict(c.allocation.choices == chosen.choices) for c in candidates]
