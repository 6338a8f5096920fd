"""A recipe checked against its model: every problem at once, then each layer's settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compress.recipe.schema import Recipe


def resolved_layers(recipe: "Recipe", source: str) -> dict[str, dict]:
    """Build the recipe's model, check the recipe against it (one ConfigError listing every
    problem), and return each compressible layer's settings: ``{"quantization": QuantSettings
    fields or None, "pruning": PruneSettings fields or None, "lowrank": LowRankSettings fields and
    the ``resolved_rank`` or None}``."""
    from dataclasses import asdict

    from compress.checkpoint.load import load_model
    from compress.errors import InputError
    from compress.lowrank.apply import layer_rank
    from compress.recipe.check import check_against_model, compressible_layers
    from compress.recipe.problems import raise_problems

    try:
        model = load_model(recipe.model["spec"], recipe.model.get("weights"), recipe.model.get("task"))
    except InputError as exc:
        raise InputError(f"{source}: model: {exc}") from exc
    raise_problems(f"{source} with model {recipe.model['spec']}", check_against_model(recipe, model))
    layers = compressible_layers(model)
    quant, prune, lowrank = recipe.quant_settings(layers), recipe.prune_settings(layers), recipe.lowrank_settings(layers)
    factorised = {name: {**asdict(settings), "resolved_rank": layer_rank(layers[name], settings, name)}
                  for name, settings in lowrank.items()}
    return {name: {"quantization": asdict(quant[name]) if name in quant else None,
                   "pruning": asdict(prune[name]) if name in prune else None,
                   "lowrank": factorised.get(name)} for name in layers}
