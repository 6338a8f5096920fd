"""A recipe checked against the model it names: every rule must hit a layer, every resolved layer
setting must be valid for that layer (combinations included)."""

from __future__ import annotations

from torch import nn

from compress.errors import UserError
from compress.prune.records import PruneSettings
from compress.quant.records import QuantSettings
from compress.recipe.rules import DEFAULT, PATTERN, applicable_rule, resolve_all
from compress.recipe.schema import Recipe

LAYER_KINDS = (nn.Conv2d, nn.Linear)


def compressible_layers(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, LAYER_KINDS)]


def check_against_model(recipe: Recipe, model: nn.Module) -> list[str]:
    """Problems in the same ``path: message`` form as the schema's."""
    layers = compressible_layers(model)
    modules = dict(model.named_modules())
    problems = []
    for section, rules, config in (("quantization", recipe.quantization, QuantSettings),
                                   ("pruning", recipe.pruning, PruneSettings)):
        problems += _unmatched(section, rules, layers, modules)
        for name, settings in resolve_all(rules, layers).items():
            problems += _invalid(section, name, settings, config, modules[name])
    return problems


def _unmatched(section: str, rules: dict, layers: list[str], modules: dict) -> list[str]:
    problems = []
    used = {applicable_rule(rules, name) for name in layers}
    for key in rules:
        if key == DEFAULT or key in used:
            continue
        if key.startswith(PATTERN):
            problems.append(f"{section}.layers.{key}: matches no Conv2d/Linear layer")
        elif key in modules:
            problems.append(f"{section}.layers.{key}: is a {type(modules[key]).__name__}, not a Conv2d/Linear layer")
        else:
            problems.append(f"{section}.layers.{key}: no such module in the model")
    return problems


def _invalid(section: str, name: str, settings: dict, config: type, module: nn.Module) -> list[str]:
    where = f"{section}.layers (as resolved for {name})"
    try:
        resolved = config(**settings)
    except UserError as exc:
        return [f"{where}: {exc}"]
    if isinstance(resolved, PruneSettings) and resolved.pattern == "2:4":
        reduction = module.weight[0].numel()
        if reduction % 4:
            return [f"{where}: 2:4 needs a reduction size divisible by 4; this layer's is {reduction}"]
    return []
