"""``compress plan MODEL --data D --budget avg_bits=4 -o plan.yaml``: bits (and sparsity) per
layer from curvature, solved exactly under the budgets."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    from compress.cli.curvature import add_curvature_options

    parser = subparsers.add_parser(
        "plan", parents=[parent], help="bits and sparsity per layer under a budget, from curvature",
        description="Measure each layer's Hessian trace (or read --curvature JSON), predict the loss "
        "increase of every option (HAWQ-style trace-weighted perturbation) and choose one option per "
        "Linear/Conv layer by an integer program under the budgets.")
    add_curvature_options(parser)
    parser.add_argument("--budget", action="append", required=True, metavar="NAME=VALUE",
                        help="avg_bits=4 or size_mb=1.5; repeat for several")
    parser.add_argument("--bits", default="2,3,4,8,fp32", help="candidate weight bits (default 2,3,4,8,fp32)")
    parser.add_argument("--sparsities", default="0", help="candidate pruned fractions (default 0)")
    parser.add_argument("--patterns", default="unstructured", help="unstructured, 2:4, channel (comma-separated)")
    parser.add_argument("--sensitivity", choices=("hybrid", "trace"), default="hybrid",
                        help="trace: ½·(Tr/n)·‖ΔW‖² only; hybrid (default): the larger of that and the measured "
                        "loss change of compressing the layer alone (one forward pass per option)")
    parser.add_argument("--curvature", metavar="JSON", help="reuse a `compress curvature --json` result")
    parser.add_argument("-o", "--output", required=True, metavar="YAML", help="where to write the plan recipe")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from compress.jsonio import write_json
    from compress.plan.make import PlanSpec, make_plan, parse_budget
    from compress.plan.recipe import plan_recipe, refuse_overwrite, write_recipe

    output = Path(args.output)
    refuse_overwrite(output, args.force)  # before the expensive part
    spec = PlanSpec(budgets=dict(parse_budget(b) for b in args.budget), bits=_bits(args.bits),
                    sparsities=_floats(args.sparsities, "--sparsities"), patterns=_patterns(args.patterns))
    model, data, curvature = _model_data_curvature(args)
    measured = None
    if args.sensitivity == "hybrid":
        from compress.plan.make import layer_options
        from compress.plan.measured import measured_delta_loss

        measured = measured_delta_loss(model, data, curvature.loss, layer_options(model, spec), args.batch_size)
    plan = make_plan(model, curvature, spec, measured)
    budgets = ", ".join(f"{k}={v:g}" for k, v in spec.budgets.items())
    write_recipe(plan_recipe(plan, args.model, args.data, args.weights), output,
                 f"compress plan: {args.model} on {args.data}, budget {budgets}", args.force)
    _print_plan(plan, output)
    if args.json:
        write_json(args.json, plan.to_dict())
    return 0


def _model_data_curvature(args: argparse.Namespace):
    from compress.cli.curvature import calibration_data, measure_curvature

    if args.curvature is None:
        return measure_curvature(args)
    import json

    from compress.curvature.result import Curvature
    from compress.errors import UserError
    from compress.models.spec import build_model

    try:
        curvature = Curvature.from_dict(json.loads(open(args.curvature, encoding="utf-8").read()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read curvature {args.curvature}: {exc}; give a `compress curvature --json` file") from exc
    return build_model(args.model, args.weights), calibration_data(args), curvature


def _bits(text: str) -> tuple[int | None, ...]:
    from compress.errors import UserError

    values = []
    for item in text.split(","):
        item = item.strip().lower()
        if item in ("fp32", "float", "32"):
            values.append(None)
        elif item.isdigit() and 2 <= int(item) <= 8:
            values.append(int(item))
        else:
            raise UserError(f"bad --bits entry {item!r}; use integers 2..8 or fp32")
    return tuple(values)


def _floats(text: str, option: str) -> tuple[float, ...]:
    from compress.errors import UserError

    try:
        values = tuple(float(item) for item in text.split(","))
    except ValueError:
        raise UserError(f"bad {option} {text!r}; give comma-separated fractions in [0, 1)") from None
    if not all(0 <= v < 1 for v in values):
        raise UserError(f"bad {option} {text!r}; every fraction must be in [0, 1)")
    return values


def _patterns(text: str) -> tuple[str, ...]:
    from compress.errors import UserError
    from compress.prune.masks import PATTERNS

    values = tuple(item.strip() for item in text.split(","))
    unknown = [v for v in values if v not in PATTERNS]
    if unknown:
        raise UserError(f"unknown pattern {unknown[0]!r}; choose from {', '.join(PATTERNS)}")
    return values


def _print_plan(plan, output) -> None:
    from rich.console import Console
    from rich.table import Table

    from compress.plan.sensitivity import LayerOption

    table = Table(title=f"compress plan -> {output}")
    for column in ("layer", "weights", "trace", "choice", "predicted Δloss", "size (kB)"):
        table.add_column(column, justify="left" if column in ("layer", "choice") else "right")
    for name, layer in plan.layers.items():
        choice = LayerOption(layer.weight_bits, layer.sparsity, layer.pattern).label()
        table.add_row(name, f"{layer.num_weights:,}", f"{layer.trace:.4g}", choice,
                      f"{layer.predicted_delta_loss:.3g}", f"{layer.storage_bits / 8e3:.2f}")
    console = Console()
    console.print(table)
    totals = ", ".join(f"{k} {v:.4g}" for k, v in plan.totals.items())
    console.print(f"predicted Δloss {plan.predicted_delta_loss:.4g}; totals: {totals}; {plan.solver}")
