"""The integer program against brute force; budgets met; infeasible budgets explained."""

import itertools

import numpy as np
import pytest

from compress.errors import BudgetError
from compress.plan.allocation import allocate


def brute_force(omega, costs, budgets):
    best = None
    for choice in itertools.product(*(range(omega.shape[1]) for _ in range(omega.shape[0]))):
        rows = np.arange(len(choice))
        if not np.isfinite(omega[rows, choice]).all():
            continue
        if any(costs[k][rows, choice].sum() > b + 1e-9 for k, b in budgets.items()):
            continue
        value = omega[rows, choice].sum()
        best = value if best is None else min(best, value)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_solver_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    layers, options = rng.integers(2, 6), rng.integers(2, 5)
    omega = rng.exponential(1.0, (layers, options))
    omega[rng.random((layers, options)) < 0.15] = np.inf
    omega[:, 0] = rng.exponential(1.0, layers)  # every layer keeps one allowed option
    costs = {"size": rng.integers(1, 20, (layers, options)).astype(float),
             "bops": rng.exponential(5.0, (layers, options))}
    budgets = {"size": float(np.median(costs["size"].sum(axis=0)))}
    if seed % 2:
        budgets["bops"] = float(np.quantile(costs["bops"].sum(axis=0), 0.7))
    expected = brute_force(omega, costs, budgets)
    if expected is None:
        with pytest.raises(BudgetError):
            allocate(omega, costs, budgets)
        return
    result = allocate(omega, costs, budgets)
    assert result.objective == pytest.approx(expected, rel=1e-9, abs=1e-12)
    for name, budget in budgets.items():
        assert result.totals[name] <= budget + 1e-9


def test_infeasible_budget_names_the_constraint_and_smallest_value() -> None:
    omega = np.array([[0.0, 1.0, 3.0], [0.0, 2.0, 5.0]])
    size = np.array([[8.0, 4.0, 2.0], [8.0, 4.0, 2.0]])
    with pytest.raises(BudgetError, match=r"size=3 cannot be met.*smallest reachable .* is 4") as error:
        allocate(omega, {"size": size}, {"size": 3.0})
    assert (error.value.constraint, error.value.reachable) == ("size", 4.0)
    # jointly infeasible, each alone feasible: with bops ≤ 5 the smallest size is 12 (50% over 8);
    # with size ≤ 8 the smallest bops is 6 (20% over 5): the size budget is the one out of reach
    bops = np.array([[1.0, 3.0, 9.0], [1.0, 3.0, 9.0]])
    with pytest.raises(BudgetError, match=r"size=8 cannot be met.*is 12"):
        allocate(omega, {"size": size, "bops": bops}, {"size": 8.0, "bops": 5.0})


def test_exact_budget_is_reachable() -> None:
    omega = np.array([[0.0, 1.0], [0.0, 4.0]])
    size = np.array([[8.0, 4.0], [8.0, 4.0]])
    result = allocate(omega, {"size": size}, {"size": 12.0})
    assert result.totals["size"] == 12.0 and result.choices == (1, 0) and result.objective == 1.0


def test_best_allocations_are_the_least_objective_ones_in_order() -> None:
    import itertools

    from compress.plan.allocation import best_allocations

    rng = np.random.default_rng(3)
    omega, cost = rng.random((3, 3)), rng.random((3, 3))
    budget = float(np.median(cost.sum(axis=0)))
    found = best_allocations(omega, {"size": cost}, {"size": budget}, (), 5)
    feasible = sorted((omega[range(3), c].sum(), c) for c in itertools.product(range(3), repeat=3)
                      if cost[range(3), c].sum() <= budget)
    assert [a.objective for a in found] == pytest.approx([v for v, _ in feasible[:5]])
    assert len({a.choices for a in found}) == len(found)
    everything = best_allocations(omega, {"size": cost}, {"size": budget}, (), 100)
    assert len(everything) == len(feasible)
