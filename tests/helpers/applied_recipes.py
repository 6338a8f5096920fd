"""The example recipes that run in seconds (builtin:mnist-cnn), applied by the library pipeline
without fine-tuning (pruning, factorisation and quantization only, on 128 calibration digits): the models whose
artifacts the packing and export size tests check."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

from torch import nn

from compress.lowrank.records import LowRankRecords
from compress.quant.records import QuantRecords

RECIPES = sorted((Path(__file__).parents[2] / "recipes").glob("mnist-cnn-*.yaml"))
CALIBRATION_SAMPLES = 128


@dataclass(frozen=True)
class Applied:
    name: str
    spec: str
    model: nn.Module
    quant: QuantRecords
    lowrank: LowRankRecords | None


@cache
def apply_recipe(path: Path) -> Applied:
    """``path`` applied in memory: channel pruning, quantization, masks (no fine-tuning); applied once
    per test session (callers must not modify the model)."""
    from compress.apply.pipeline import ApplySpec, apply_
    from compress.data.spec import load_data
    from compress.models.spec import build_model
    from compress.recipe.check import compressible_layers
    from compress.recipe.schema import load_recipe

    recipe = load_recipe(str(path))
    model = build_model(recipe.model["spec"])
    calibration = load_data(recipe.data["calibration"], None, "train")
    calibration = calibration.subset(range(CALIBRATION_SAMPLES), f"{calibration.name}[:{CALIBRATION_SAMPLES}]")
    layers = compressible_layers(model)
    spec = ApplySpec(recipe.quant_settings(layers), recipe.prune_settings(layers), None, recipe.saliency,
                     "ce" if calibration.has_targets else "distill", lowrank=recipe.lowrank_settings(layers))
    outcome = apply_(model, spec, calibration, None)
    return Applied(path.stem, recipe.model["spec"], model.eval(), outcome.quant, outcome.lowrank)
