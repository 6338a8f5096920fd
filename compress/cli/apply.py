"""``compress apply RECIPE -o OUT``: prune, quantize and recover as the recipe says; write a
compressed checkpoint directory that ``compress eval OUT`` reloads without the recipe."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "apply", parents=[parent], help="compress a model as a recipe says (with QAT/KD recovery)",
        description="Channel pruning, BatchNorm folding, quantization with calibrated activations, "
        "masks, then QAT and/or distillation from the uncompressed teacher; fine-tuning is checkpointed "
        "under OUT/checkpoints and resumes after an interruption (--resume). Runs under torchrun too.")
    parser.add_argument("recipe", metavar="RECIPE", help="recipe YAML (see recipes/, or `compress plan`)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="the compressed checkpoint directory")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in DIR")
    parser.add_argument("--force", action="store_true", help="replace an existing checkpoint in DIR")
    parser.add_argument("--batch-size", type=int, default=128, help="calibration and evaluation batch size")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import copy
    from pathlib import Path

    from compress.apply.checkpoint import CheckpointInfo, save_checkpoint
    from compress.apply.pipeline import ApplySpec, apply_
    from compress.cli.validate import resolved_layers
    from compress.evaluation import evaluate
    from compress.models.spec import build_model
    from compress.recipe.check import compressible_layers
    from compress.recipe.schema import load_recipe

    recipe = load_recipe(args.recipe)
    out = Path(args.output)
    _check_output(out, args.resume, args.force)
    resolved_layers(recipe, args.recipe)  # every problem against the model, before any work
    model = build_model(recipe.model["spec"], recipe.model.get("weights"))
    calibration, train, heldout = _data(recipe)
    teacher_for_eval = copy.deepcopy(model)  # the uncompressed reference for data without labels
    before = evaluate(model, recipe.model["spec"], heldout, teacher_for_eval, args.batch_size)
    layers = compressible_layers(model)
    spec = ApplySpec(recipe.quant_settings(layers), recipe.prune_settings(layers), recipe.finetune_spec(),
                     recipe.saliency, "ce" if calibration.has_targets else "distill")
    outcome = apply_(model, spec, calibration, train, out / "checkpoints", args.batch_size)
    after = evaluate(model, str(out), heldout, teacher_for_eval, args.batch_size)
    info = CheckpointInfo(
        recipe.model["spec"], recipe.model.get("weights"), recipe.to_dict(),
        None if outcome.quant is None else outcome.quant.to_dict(),
        None if outcome.prune is None else outcome.prune.to_dict(),
        None if outcome.finetune is None else outcome.finetune.to_dict(),
        {"before": before.to_dict(), "after": after.to_dict()})
    if _is_rank_zero():
        save_checkpoint(model, info, out)
        _print(before, after, outcome, out)
        if args.json:
            from compress.jsonio import write_json

            write_json(args.json, info.to_dict())
    return 0


def _check_output(out, resume: bool, force: bool) -> None:
    from compress.errors import InputError

    if resume and force:
        raise InputError("--resume continues the run in the output directory; --force replaces it; choose one")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory")
    started = out.is_dir() and any(out.iterdir())
    if started and not (resume or force):
        raise InputError(f"{out} is not empty; pass --resume to continue an interrupted run there, "
                        "--force to replace it, or choose another -o")
    if resume and not (out / "checkpoints").is_dir():
        raise InputError(f"nothing to resume in {out}: it has no checkpoints/ folder")
    if force and (out / "checkpoints").is_dir():
        import shutil

        shutil.rmtree(out / "checkpoints")  # stale fine-tuning state must not be resumed by --force


def _data(recipe):
    """(calibration, train, held-out) sources: builtins split train / held-out by role."""
    from compress.data.spec import load_data

    section = recipe.data
    calibration = load_data(section["calibration"], None, "train")
    samples = section["calibration_samples"]
    if len(calibration) > samples:
        calibration = calibration.subset(range(samples), f"{calibration.name}[:{samples}]")
    train = load_data(section.get("train") or section["calibration"], None, "train")
    heldout = load_data(section.get("eval") or section["calibration"], None, "heldout")
    return calibration, train, heldout


def _is_rank_zero() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _print(before, after, outcome, out) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"compress apply -> {out}")
    for column in ("", before.metric, "size (MB)", "parameters"):
        table.add_column(column, justify="left" if not column else "right")
    for label, result in (("before", before), ("after", after)):
        table.add_row(label, f"{result.value:.4f}", f"{result.size_mb:.4f}", f"{result.num_params:,}")
    console = Console()
    console.print(table)
    if outcome.finetune is not None:
        result = outcome.finetune
        sharpness = "" if result.initial_sharpness is None else f", λ_max {result.initial_sharpness:.4g}"
        console.print(f"fine-tuning: {result.steps} steps, lr {result.lr:.3g} ({result.lr_source}{sharpness}), "
                      f"{result.seconds:.1f} s")
