"""Exact allocation of one option per layer by a 0-1 integer program (HiGHS via
``scipy.optimize.milp``), as in HAWQ-V3 (Yao et al. 2021):

    minimise   Σ_l Σ_o Ω[l, o] · x[l, o]
    subject to Σ_o x[l, o] = 1                      for every layer l,
               Σ_l Σ_o cost_k[l, o] · x[l, o] ≤ B_k  for every budget k,
               Σ_l Σ_o tie_t[l, o] · x[l, o] = 0            for every tie t,
               x[l, o] ∈ {0, 1},  x[l, o] = 0 where Ω[l, o] is inf (option excluded).

A tie table holds a property of layer a's options (e.g. activation bits) and minus that property
of layer b's, so the constraint makes a and b choose options with equal property.

With a ``tie_break`` table (the latency when the plan has a latency table), the solve is
lexicographic: among the allocations whose total Ω is within ``TIE_TOLERANCE`` (relative) or
``tie_tolerance`` (absolute, e.g. the loss resolution of the data) of the optimum Ω*, the one of least
Σ tie_break is taken (a second program with Σ Ω·x ≤ Ω* + tol added), so of plans of equal predicted
loss the faster wins without a weighted term competing with Ω; a third program then takes the least
Σ Ω among those as fast as that one (equal-speed options, e.g. weight bits that run as the same
kernel, are not traded for nothing).

An infeasible set of budgets is reported with the budget furthest out of reach and the smallest
value it could take with the other budgets kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compress.errors import BudgetError, ConfigError

TIE_TOLERANCE = 1e-6  # relative Σ Ω within which two allocations count as equally good


@dataclass(frozen=True)
class Allocation:
    choices: tuple[int, ...]  # chosen option index per layer
    objective: float
    totals: dict[str, float]  # Σ cost_k of the chosen options


def allocate(omega: np.ndarray, costs: dict[str, np.ndarray], budgets: dict[str, float],
             ties: tuple[np.ndarray, ...] = (), excluded: tuple[tuple[int, ...], ...] = (),
             tie_break: np.ndarray | None = None, tie_tolerance: float = 0.0) -> Allocation:
    """The allocation minimising total Ω within every budget (each budget names a cost table) and
    every tie, other than the ``excluded`` choice vectors; of equal Ω, the least Σ ``tie_break``."""
    allowed = np.isfinite(omega)
    if not allowed.any(axis=1).all():
        layer = int(np.flatnonzero(~allowed.any(axis=1))[0])
        raise ConfigError(f"layer #{layer} has no allowed option; relax its overrides or sparsity limit")
    choices = _solve(np.where(allowed, omega, 0.0), allowed, costs, budgets, ties, excluded)
    if choices is None and excluded:
        raise BudgetError("no further allocation meets the budgets")
    if choices is None:
        raise _infeasibility(allowed, costs, budgets, ties)
    layers = np.arange(len(choices))
    if tie_break is not None:
        best = float(omega[layers, choices].sum())
        scale = abs(best) if best != 0 else 1.0  # the row normalised: the solver's tolerances are absolute
        ceiling = (np.where(allowed, omega, 0.0) / scale, best / scale + max(TIE_TOLERANCE, tie_tolerance / scale))
        speed = np.where(allowed, tie_break, 0.0)
        faster = _solve(speed, allowed, costs, budgets, ties, excluded, (ceiling,))
        if faster is not None:
            fastest = float(speed[layers, faster].sum())
            equal = (speed, fastest + TIE_TOLERANCE * max(abs(fastest), 1e-12))
            least = _solve(ceiling[0], allowed, costs, budgets, ties, excluded, (ceiling, equal))
            choices = faster if least is None else least
    return Allocation(
        choices=tuple(int(c) for c in choices),
        objective=float(omega[layers, choices].sum()),
        totals={name: float(costs[name][layers, choices].sum()) for name in budgets},
    )


def _solve(objective: np.ndarray, allowed: np.ndarray, costs: dict[str, np.ndarray],
           budgets: dict[str, float], ties: tuple[np.ndarray, ...],
           excluded: tuple[tuple[int, ...], ...] = (),
           ceilings: tuple[tuple[np.ndarray, float], ...] = ()) -> np.ndarray | None:
    """Chosen option per layer, or None when the budgets cannot all be met. Each excluded choice
    vector c gets the no-good cut Σ_l x[l, c_l] ≤ L − 1; each ceiling (table, bound) adds
    Σ table·x ≤ bound."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    num_layers, num_options = objective.shape
    one_per_layer = np.kron(np.eye(num_layers), np.ones(num_options))
    constraints = [LinearConstraint(one_per_layer, 1, 1)]
    for name, budget in budgets.items():
        constraints.append(LinearConstraint(costs[name].reshape(1, -1), -np.inf, budget))
    for tie in ties:
        constraints.append(LinearConstraint(tie.reshape(1, -1), 0, 0))
    for choice in excluded:
        cut = np.zeros(objective.size)
        cut[np.arange(num_layers) * num_options + np.asarray(choice)] = 1
        constraints.append(LinearConstraint(cut.reshape(1, -1), -np.inf, num_layers - 1))
    for table, bound in ceilings:
        constraints.append(LinearConstraint(table.reshape(1, -1), -np.inf, bound))
    result = milp(objective.ravel(), constraints=constraints, integrality=np.ones(objective.size),
                  bounds=Bounds(0, allowed.ravel().astype(float)))
    if result.status != 0 or result.x is None:
        return None
    return result.x.reshape(num_layers, num_options).argmax(axis=1)


def _infeasibility(allowed: np.ndarray, costs: dict[str, np.ndarray], budgets: dict[str, float],
                   ties: tuple[np.ndarray, ...]) -> BudgetError:
    """The error naming the budget with the largest relative shortfall and its smallest reachable
    value while the other budgets hold."""
    shortfalls = {}
    for name, budget in budgets.items():
        others = {k: v for k, v in budgets.items() if k != name}
        choices = _solve(np.where(allowed, costs[name], 0.0), allowed, costs, others, ties)
        if choices is None:
            continue
        reachable = float(costs[name][np.arange(len(choices)), choices].sum())
        if reachable > budget:
            shortfalls[name] = (reachable, (reachable - budget) / max(abs(budget), 1e-12))
    if not shortfalls:
        return BudgetError("the budgets cannot all be met at once" + (" with the tied layers" if ties else "")
                           + "; relax one of " + ", ".join(budgets))
    name = max(shortfalls, key=lambda k: shortfalls[k][1])
    return BudgetError(f"budget {name}={budgets[name]:g} cannot be met: the smallest reachable with the other "
                       f"budgets kept is {shortfalls[name][0]:.6g}; raise it to at least that",
                       name, shortfalls[name][0])


def best_allocations(omega: np.ndarray, costs: dict[str, np.ndarray], budgets: dict[str, float],
                     ties: tuple[np.ndarray, ...], count: int, tie_break: np.ndarray | None = None,
                     tie_tolerance: float = 0.0) -> list[Allocation]:
    """The ``count`` allocations of least total Ω (fewer if fewer meet the budgets), best first:
    each solve excludes the ones found before."""
    found = [allocate(omega, costs, budgets, ties, tie_break=tie_break, tie_tolerance=tie_tolerance)]
    while len(found) < count:
        try:
            found.append(allocate(omega, costs, budgets, ties, tuple(a.choices for a in found), tie_break, tie_tolerance))
        except BudgetError:
            break
    return found
