"""``compress apply RECIPE [key.path=value ...] -o OUT``: prune, quantize and recover as the recipe
says; write a compressed checkpoint directory that ``compress eval OUT`` reloads without the
recipe. argv → ``compress.pipeline.apply`` → print."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "apply", parents=[parent], help="compress a model as a recipe says (with QAT/KD recovery)",
        description="Channel pruning, BatchNorm folding, quantization with calibrated activations, "
        "masks, then QAT and/or distillation from the uncompressed teacher; fine-tuning is checkpointed "
        "under OUT/checkpoints and resumes after an interruption (--resume). Runs under torchrun too.")
    parser.add_argument("recipe", metavar="RECIPE", help="recipe YAML (see recipes/, or `compress plan`)")
    parser.add_argument("overrides", nargs="*", metavar="KEY.PATH=VALUE",
                        help="override recipe fields, e.g. finetune.mode=qat+kd finetune.epochs=1 "
                        "data.train=file.py:train (values read as YAML scalars; the result is validated "
                        "like the file)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="the compressed checkpoint directory")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in DIR")
    parser.add_argument("--force", action="store_true", help="replace an existing checkpoint in DIR")
    parser.add_argument("--batch-size", type=int, default=128, help="calibration and evaluation batch size")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from compress.pipeline.apply import apply_to_checkpoint, is_rank_zero
    from compress.recipe.load import read_yaml
    from compress.cli.overrides import apply_overrides
    from compress.recipe.schema import parse_recipe

    recipe = parse_recipe(apply_overrides(read_yaml(args.recipe), args.overrides), args.recipe)
    applied = apply_to_checkpoint(recipe, args.output, args.resume, args.force, args.batch_size, source=args.recipe)
    if is_rank_zero():
        _print(applied, args.output)
        if args.json:  # the checkpoint's own JSON as written (weight grids left to its weights file)
            from compress.checkpoint.format import read_info
            from compress.jsonio import write_json

            write_json(args.json, read_info(Path(args.output)).to_dict())
    return 0


def _print(applied, out) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"compress apply -> {out}")
    for column in ("", applied.before.metric, "size (MB)", "parameters"):
        table.add_column(column, justify="left" if not column else "right")
    for label, result in (("before", applied.before), ("after", applied.after)):
        table.add_row(label, f"{result.value:.4f}", f"{result.size_mb:.4f}", f"{result.num_params:,}")
    console = Console()
    console.print(table)
    if applied.outcome.finetune is not None:
        result = applied.outcome.finetune
        sharpness = "" if result.initial_sharpness is None else f", λ_max {result.initial_sharpness:.4g}"
        console.print(f"fine-tuning: {result.steps} steps, lr {result.lr:.3g} ({result.lr_source}{sharpness}), "
                      f"{result.seconds:.1f} s")
