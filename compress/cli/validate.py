"""``compress validate RECIPE``: every problem of a recipe at once, checked against its model."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "validate", parents=[parent], help="check a recipe (schema, and against its model)",
        description="Check a recipe against the schema (every problem reported at once, with its key path, "
        "the bad value and what is allowed) and, unless --no-model, against the model it names; print "
        "each layer's resolved settings.")
    parser.add_argument("recipe", metavar="RECIPE", help="recipe YAML")
    parser.add_argument("--no-model", action="store_true", help="check the schema only; do not build the model")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from compress.recipe.schema import load_recipe

    recipe = load_recipe(args.recipe)
    if args.no_model:
        print(f"{args.recipe}: valid (schema only)")
        return 0
    resolved = resolved_layers(recipe, args.recipe)
    _print(resolved, args.recipe)
    if args.json:
        from compress.jsonio import write_json

        write_json(args.json, resolved)
    return 0


def resolved_layers(recipe, source: str) -> dict[str, dict]:
    """Build the recipe's model, check the recipe against it, and return each layer's settings."""
    from compress.errors import UserError
    from compress.models.spec import build_model
    from compress.recipe.check import check_against_model, compressible_layers

    model = build_model(recipe.model["spec"], recipe.model.get("weights"))
    problems = check_against_model(recipe, model)
    if problems:
        count = len(problems)
        raise UserError(f"{source}: {count} problem{'s' if count > 1 else ''} with model "
                        f"{recipe.model['spec']}\n  " + "\n  ".join(problems))
    layers = compressible_layers(model)
    quant, prune = recipe.quant_settings(layers), recipe.prune_settings(layers)
    return {name: {"quantization": None if name not in quant else vars(quant[name]),
                   "pruning": None if name not in prune else vars(prune[name])} for name in layers}


def _print(resolved: dict[str, dict], source: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{source}: valid")
    for column in ("layer", "weight bits", "act bits", "pruning"):
        table.add_column(column)
    for name, layer in resolved.items():
        quant, prune = layer["quantization"], layer["pruning"]
        table.add_row(name, "fp32" if not quant or quant["weight_bits"] is None else str(quant["weight_bits"]),
                      "fp32" if not quant or quant["act_bits"] is None else str(quant["act_bits"]),
                      "-" if not prune else f"{prune['ratio']:g} {prune['pattern']} ({prune['criterion']})")
    Console().print(table)
