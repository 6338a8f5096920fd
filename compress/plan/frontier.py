"""The Pareto frontier of one budget: the optimal plan's predicted Δloss at a sweep of budget
values, from one curvature pass (every point reuses the same Ω table; only the integer program
is solved again)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from compress.atomic import atomic_path
from compress.errors import BudgetError, InputError
from compress.plan.make import Plan


@dataclass(frozen=True)
class FrontierPoint:
    budget: float
    predicted_delta_loss: float
    totals: dict[str, float]
    choices: dict[str, str]  # layer -> option label


@dataclass(frozen=True)
class Frontier:
    budget_name: str
    points: list[FrontierPoint]
    infeasible: list[float]  # budget values no plan meets

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def parse_sweep(text: str, allowed: tuple[str, ...]) -> tuple[str, np.ndarray]:
    """``size_mb=0.01:0.09:9`` -> ("size_mb", 9 evenly spaced values from 0.01 to 0.09)."""
    name, sep, rest = text.partition("=")
    parts = rest.split(":")
    try:
        low, high, count = float(parts[0]), float(parts[1]), int(parts[2])
    except (ValueError, IndexError):
        raise InputError(f"bad --sweep {text!r}; write NAME=LOW:HIGH:COUNT, e.g. avg_bits=2:8:13") from None
    if not sep or name not in allowed or len(parts) != 3 or not 0 < low < high or count < 2:
        raise InputError(f"bad --sweep {text!r}; NAME one of {', '.join(allowed)}, 0 < LOW < HIGH, COUNT ≥ 2")
    return name, np.linspace(low, high, count)


def sweep(plan_for: Callable[[float], Plan], budget_name: str, values: np.ndarray) -> Frontier:
    points, infeasible = [], []
    for value in values:
        try:
            plan = plan_for(float(value))
        except BudgetError:
            infeasible.append(float(value))
            continue
        choices = {name: layer.option().label() for name, layer in plan.layers.items()}
        points.append(FrontierPoint(float(value), plan.predicted_delta_loss, plan.totals, choices))
    if not points:
        raise InputError(f"no {budget_name} value in the sweep can be met; widen its range")
    return Frontier(budget_name, points, infeasible)


def plot_frontier(frontier: Frontier, path: str) -> None:
    """Predicted Δloss against the budget's achieved total (log scale: Δloss spans decades)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [p.totals[frontier.budget_name] for p in frontier.points]
    y = [max(p.predicted_delta_loss, 1e-12) for p in frontier.points]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(x, y, "o-")
    axes.set_yscale("log")
    axes.set_xlabel(f"{frontier.budget_name} (achieved)")
    axes.set_ylabel("predicted loss increase ΣΩ")
    axes.set_title("compress plan: Pareto frontier")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    with atomic_path(path) as partial:  # a kill mid-write leaves no truncated picture
        figure.savefig(partial, dpi=120)
    plt.close(figure)
