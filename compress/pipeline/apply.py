"""Apply a plan or a recipe: prune, quantize and recover in memory (``apply_recipe_``), or from a
recipe to a checkpoint directory that reloads without it (``apply_to_checkpoint``)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compress.errors import InputError

if TYPE_CHECKING:
    from torch import nn

    from compress.apply.pipeline import ApplyOutcome
    from compress.checkpoint.format import CheckpointInfo
    from compress.data.source import DataSource
    from compress.evaluation import EvalResult
    from compress.plan.make import Plan
    from compress.recipe.schema import Recipe

BATCH_SIZE = 128


@dataclass(frozen=True)
class Applied:
    """What applying a recipe did: the records, and the evaluation before and after."""

    recipe: "Recipe"
    outcome: "ApplyOutcome"
    before: "EvalResult"
    after: "EvalResult"

    def checkpoint_info(self) -> "CheckpointInfo":
        """The checkpoint's ``compressed.json`` (``save_checkpoint`` writes it)."""
        from compress.checkpoint.format import CheckpointInfo

        outcome = self.outcome
        return CheckpointInfo(
            self.recipe.model["spec"], self.recipe.model.get("weights"), self.recipe.to_dict(),
            None if outcome.quant is None else outcome.quant.to_dict(),
            None if outcome.prune is None else outcome.prune.to_dict(),
            None if outcome.finetune is None else outcome.finetune.to_dict(),
            {"before": self.before.to_dict(), "after": self.after.to_dict()},
            lowrank=None if outcome.lowrank is None else outcome.lowrank.to_dict())


def as_recipe(plan: "Plan | Recipe", model: str = "model", data: str = "data") -> "Recipe":
    """A ``Recipe`` as is; a ``Plan`` as the recipe ``compress plan`` would write for it."""
    from compress.plan.make import Plan
    from compress.recipe.schema import Recipe

    if isinstance(plan, Recipe):
        return plan
    if isinstance(plan, Plan):
        from compress.pipeline.plan import plan_as_recipe

        return plan_as_recipe(plan, model, data)
    raise InputError(f"cannot apply {type(plan).__name__}; give a Plan or a Recipe")


def recipe_data(recipe: "Recipe", model: "nn.Module | None" = None) -> tuple["DataSource", "DataSource", "DataSource"]:
    """(calibration, train, held-out) of a recipe: builtins split train / held-out by role; text
    files are tokenised for ``model`` (an ``hf:`` model) in blocks of the recipe's ``seq_len``."""
    from compress.data.spec import load_data
    from compress.pipeline.inputs import first_samples

    section = recipe.data
    seq_len = section.get("seq_len")
    calibration = first_samples(load_data(section["calibration"], None, "train", model, seq_len),
                                section["calibration_samples"])
    train = load_data(section.get("train") or section["calibration"], None, "train", model, seq_len)
    heldout = load_data(section.get("eval") or section["calibration"], None, "heldout", model, seq_len)
    return calibration, train, heldout


def apply_recipe_(model: "nn.Module", recipe: "Recipe", calibration: "DataSource", train: "DataSource | None",
                  heldout: "DataSource", checkpoint_dir: Path | None = None, batch_size: int = BATCH_SIZE,
                  model_name: str = "model") -> Applied:
    """In place: the recipe's pruning, quantization and fine-tuning on ``model``, evaluated on
    ``heldout`` before and after (data without labels: cosine to the uncompressed model)."""
    from compress.apply.pipeline import ApplySpec, apply_
    from compress.evaluation import evaluate
    from compress.pipeline.checks import check_inputs
    from compress.recipe.check import compressible_layers

    trains = recipe.finetune_spec() is not None
    for source in (calibration, heldout, *([train] if train is not None else [])):
        check_inputs(model, model_name, source, trains=trains)
    reference = copy.deepcopy(model)
    before = evaluate(model, model_name, heldout, reference, batch_size)
    layers = compressible_layers(model)
    spec = ApplySpec(recipe.quant_settings(layers), recipe.prune_settings(layers), recipe.finetune_spec(),
                     recipe.saliency, "ce" if calibration.has_targets else "distill",
                     lowrank=recipe.lowrank_settings(layers))
    outcome = apply_(model, spec, calibration, train, checkpoint_dir, batch_size)
    after = evaluate(model, f"{model_name} (compressed)", heldout, reference, batch_size)
    return Applied(recipe, outcome, before, after)


def apply_to_checkpoint(recipe: "Recipe | str", out: str | Path, resume: bool = False, force: bool = False,
                        batch_size: int = BATCH_SIZE, source: str | None = None) -> Applied:
    """``compress apply``: check the recipe against its model (every problem at once), apply it,
    and save the checkpoint directory ``out`` (rank 0 only under torchrun)."""
    from contextlib import nullcontext

    from compress.checkpoint.format import save_checkpoint
    from compress.checkpoint.load import load_model
    from compress.lock import output_lock
    from compress.pipeline.validate import resolved_layers
    from compress.recipe.schema import load_recipe

    source = source or (recipe if isinstance(recipe, str) else "recipe")
    recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
    out = Path(out)
    resolved_layers(recipe, source)
    with output_lock(out) if is_rank_zero() else nullcontext():
        check_output(out, resume, force)
        model = load_model(recipe.model["spec"], recipe.model.get("weights"), recipe.model.get("task"))
        calibration, train, heldout = recipe_data(recipe, model)
        applied = apply_recipe_(model, recipe, calibration, train, heldout, out / "checkpoints", batch_size,
                                recipe.model["spec"])
        if is_rank_zero():
            save_checkpoint(model, applied.checkpoint_info(), out)
    return applied


def check_output(out: Path, resume: bool, force: bool) -> None:
    """Nothing written is replaced silently: a non-empty ``out`` needs ``resume`` or ``force``."""
    if resume and force:
        raise InputError("resume=True continues the run in the output directory; force=True replaces it; choose one")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory")
    from compress.lock import LOCK_NAME

    started = out.is_dir() and any(entry.name != LOCK_NAME for entry in out.iterdir())
    if started and not (resume or force):
        raise InputError(f"{out} is not empty; set resume=True to continue an interrupted run there, "
                         "force=True to replace it, or choose another output directory")
    if resume and not (out / "checkpoints").is_dir():
        raise InputError(f"nothing to resume in {out}: it has no checkpoints/ folder")
    if force and (out / "checkpoints").is_dir():
        import shutil

        shutil.rmtree(out / "checkpoints")  # stale fine-tuning state must not be resumed by force


def is_rank_zero() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def recipe_from_any(recipe: Any) -> "Recipe":
    """A Recipe, a recipe file path, or a recipe mapping, validated."""
    from compress.recipe.schema import Recipe, load_recipe, parse_recipe

    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, (str, Path)):
        return load_recipe(str(recipe))
    return parse_recipe(recipe, "recipe")
