"""``compress validate RECIPE``: every problem of a recipe at once, checked against its model."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "validate", parents=[parent], help="check a recipe (schema, and against its model)",
        description="Check a recipe against the schema (every problem reported at once, with its key path, "
        "the bad value and what is allowed) and, unless --no-model, against the model it names; print "
        "each layer's resolved settings (--json: write them). Exit 0 when valid, 2 otherwise.")
    parser.add_argument("recipe", metavar="RECIPE", help="recipe YAML")
    parser.add_argument("--no-model", action="store_true",
                        help="check the schema only, without building the model (prints the rules instead of layers)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from compress.errors import InputError
    from compress.recipe.schema import load_recipe

    recipe = load_recipe(args.recipe)
    if args.no_model:
        if args.json:
            raise InputError("--json writes each layer's resolved settings, which needs the model; drop --no-model")
        _print(_rules_view(recipe), f"{args.recipe}: valid (schema only; rules, not layers)", "rule")
        return 0
    from compress.pipeline.validate import resolved_layers

    resolved = resolved_layers(recipe, args.recipe)
    _print(resolved, f"{args.recipe}: valid for {recipe.model['spec']}", "layer")
    if args.json:
        from compress.jsonio import write_json

        write_json(args.json, resolved)
    return 0


def _rules_view(recipe) -> dict[str, dict]:
    """Without a model: each rule key with its settings as resolved (merged over the default),
    unset fields at the stage configs' defaults."""
    from dataclasses import asdict

    from compress.prune.records import PruneSettings
    from compress.quant.records import QuantSettings
    from compress.lowrank.settings import RANK_CHOICE, LowRankSettings
    from compress.recipe.rules import resolve

    quant_defaults = asdict(QuantSettings())
    prune_defaults = {"ratio": 0.0, "pattern": PruneSettings.pattern, "criterion": PruneSettings.criterion}
    rows = {}
    for key in dict.fromkeys([*recipe.quantization, *recipe.pruning, *recipe.lowrank]):
        quant, prune = resolve(recipe.quantization, key), resolve(recipe.pruning, key)
        lowrank = resolve(recipe.lowrank, key, RANK_CHOICE)
        rows[key] = {"quantization": None if quant is None else {**quant_defaults, **quant},
                     "pruning": None if prune is None else {**prune_defaults, **prune},
                     "lowrank": None if lowrank is None else {"method": LowRankSettings.method, **lowrank}}
    return rows


def _print(rows: dict[str, dict], title: str, kind: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    table.add_column(kind, overflow="fold")
    for column in ("weight bits", "activations", "pruning", "rank"):
        table.add_column(column, no_wrap=True)
    for name, row in rows.items():
        table.add_row(name, *_cells(row["quantization"], row["pruning"]), _rank_cell(row["lowrank"]))
    console = Console()
    console.print(title, soft_wrap=True)  # the verdict on one line, however long the path
    console.print(table)


def _cells(quant: dict | None, prune: dict | None) -> tuple[str, str, str]:
    """Weight bits (with block size), activation bits (with scheme), and the pruning as
    ``ratio pattern (criterion)``; ``-`` where a layer stays float or dense."""
    quant = quant or {"weight_bits": None, "act_bits": None}
    bits, act = quant["weight_bits"], quant["act_bits"]
    weights = "-" if bits is None else f"int{bits}" + (f" /{quant['weight_block']}" if quant["weight_block"] else "")
    scheme = "dynamic uint" if quant.get("act_dynamic") else "uint" if quant.get("act_signed") is False else "int"
    acts = "-" if act is None else f"{scheme}{act}"
    pruning = "-" if not prune or not prune["ratio"] else f"{prune['ratio']:g} {prune['pattern']} ({prune['criterion']})"
    return weights, acts, pruning


def _rank_cell(lowrank: dict | None) -> str:
    """``RANK (method)`` of a factorised layer (``RATIO kept (method)`` for a rule without a model);
    ``-`` for a layer left whole."""
    if lowrank is None:
        return "-"
    rank = lowrank.get("resolved_rank", lowrank.get("rank"))
    return f"{rank if rank is not None else format(lowrank['rank_ratio'], 'g') + ' kept'} ({lowrank['method']})"
