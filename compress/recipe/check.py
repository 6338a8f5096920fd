"""A recipe checked against the model it names: every rule must hit a layer, every resolved layer
setting must be valid for that layer (combinations included).

Low-rank rules name layers of the unfactorised model; a factorised layer ``X`` becomes ``X.0`` and
``X.1``, and the quantization rule for ``X`` applies to both (so its settings are checked on the
factors' shapes); unstructured and 2:4 masks on a factorised layer are refused (channel pruning,
which happens before the factorisation, is allowed). Ranks are checked on the unpruned shapes.
"""

from __future__ import annotations

import re

from torch import nn

from compress.errors import ConfigError, InputError
from compress.lowrank.modules import factor_names
from compress.lowrank.settings import RANK_CHOICE, LowRankSettings
from compress.prune.records import PruneSettings
from compress.quant.records import QuantSettings
from compress.recipe.problems import yaml_words
from compress.recipe.rules import DEFAULT, PATTERN, applicable_rule, resolve_all
from compress.recipe.schema import Recipe, is_float
from compress.vocab.layers import compressible_layers

def check_against_model(recipe: Recipe, model: nn.Module) -> list[str]:
    """Problems in the same ``path: message`` form as the schema's."""
    layers = list(compressible_layers(model))
    modules = dict(model.named_modules())
    problems = _unmatched("lowrank", recipe.lowrank, layers, modules)
    ranks = {}
    for name, settings in resolve_all(recipe.lowrank, layers, RANK_CHOICE).items():
        problem, rank = _factorisable(_where("lowrank", recipe.lowrank, name), name, settings, model)
        problems += problem
        if rank is not None:
            ranks[name] = rank
    factorised = factorised_copy(model, ranks)
    for section, rules, config in (("quantization", recipe.quantization, QuantSettings),
                                   ("pruning", recipe.pruning, PruneSettings)):
        problems += _unmatched(section, rules, layers, modules)
        for name, settings in resolve_all(rules, layers).items():
            on_factors = name in ranks and config is QuantSettings  # pruning masks see the layer itself
            problems += _invalid(section, rules, name, settings, config, factorised if on_factors else model,
                                 factor_names(name) if name in ranks else (name,))
    return problems + _channel_groups(recipe.pruning, recipe.prune_settings(layers), model)


def factorised_copy(model: nn.Module, ranks: dict[str, int]) -> nn.Module:
    """``model`` itself when nothing is factorised, else a copy whose layers in ``ranks`` are
    factorised at those ranks (weights zero): the shapes the later stages will see."""
    if not ranks:
        return model
    import copy

    import torch

    from compress.lowrank.modules import factorised_module, matrix_shape

    model = copy.deepcopy(model)
    for name, rank in ranks.items():
        layer = model.get_submodule(name)
        m, n, groups = matrix_shape(layer, name)
        model.set_submodule(name, factorised_module(layer, torch.zeros(groups, rank, n), torch.zeros(groups, m, rank)))
    return model


def _factorisable(where: str, name: str, settings: dict, model: nn.Module) -> tuple[list[str], int | None]:
    """The layer's rank, or the problem why it cannot be factorised as asked."""
    from compress.lowrank.apply import layer_rank

    try:
        return [], layer_rank(model.get_submodule(name), LowRankSettings(**settings), name)
    except ConfigError as exc:
        return [f"{where}: {yaml_words(str(exc)).removeprefix(f'{name}: ')}"], None


def _where(section: str, rules: dict, name: str) -> str:
    """The key path of the rule that decided layer ``name``."""
    key = applicable_rule(rules, name) or DEFAULT
    return f"{section}.layers.{key}" + ("" if key == name else f" (for {name})")


def _unmatched(section: str, rules: dict, layers: list[str], modules: dict) -> list[str]:
    """Rules that decide no layer: unknown names, modules without a compressible weight, patterns
    that match no Conv2d/Linear layer or only layers that have their own exact rule."""
    problems = []
    used = {applicable_rule(rules, name) for name in layers}
    for key in rules:
        if key == DEFAULT or key in used:
            continue
        if key.startswith(PATTERN):
            shadowed = [name for name in layers if re.fullmatch(key[len(PATTERN):], name)]
            why = f"every layer it matches has its own rule ({', '.join(shadowed)})" if shadowed else \
                "matches no Conv2d/Linear layer"
            problems.append(f"{section}.layers.{key}: {why}")
        elif key in modules:
            problems.append(f"{section}.layers.{key}: is a {type(modules[key]).__name__}, not a Conv2d/Linear layer")
        else:
            problems.append(f"{section}.layers.{key}: no such module in the model")
    return problems


def _invalid(section: str, rules: dict, name: str, settings: dict, config: type, model: nn.Module,
             targets: tuple[str, ...]) -> list[str]:
    """The layer's resolved settings, judged by the stage config and by the shapes of ``targets``
    (the layer, or its two factors in ``model``); the problem is placed at the rule that decided
    the layer."""
    where = _where(section, rules, name)
    try:
        resolved = config(**settings)
    except ConfigError as exc:
        return [f"{where}: {yaml_words(str(exc))}"]
    if isinstance(resolved, QuantSettings):
        return [problem for target in targets for problem in _quantizable(where, target, resolved, model)]
    if targets != (name,) and resolved.pattern != "channel" and resolved.ratio > 0:
        return [f"{where}: pattern {resolved.pattern!r} is not allowed on a factorised layer (lowrank.layers "
                "decides it; allowed: channel, or a null rule)"]
    reduction = model.get_submodule(name).weight[0].numel()
    if resolved.pattern == "2:4" and reduction % 4:
        return [f"{where}: pattern '2:4' is not allowed here: the reduction size (inputs per output) is "
                f"{reduction}, not a multiple of 4 (allowed: unstructured, channel)"]
    return []


def _quantizable(where: str, name: str, settings: QuantSettings, model: nn.Module) -> list[str]:
    """The quantizer's own per-layer check (Linear-only options, weight_block dividing the input
    features), asked for this one layer; a layer left float/float is simply not quantized."""
    from compress.quant.quantize import _check_layers

    if is_float(settings):
        return []
    try:
        _check_layers(model, {name: settings})
    except ConfigError as exc:
        return [f"{where}: {yaml_words(str(exc))}"]
    return []


def _channel_groups(rules: dict, settings: dict[str, PruneSettings], model: nn.Module) -> list[str]:
    """Channels are removed per group of coupled channels (``compress.vocab.groups``): a
    group that must be left alone (model output, an op that is not channel-wise, ...) or whose
    producing layers ask for different settings is a problem rather than a silent no-op."""
    from compress.vocab.groups import channel_groups

    channel = {name: s for name, s in settings.items() if s.pattern == "channel"}
    if not channel:
        return []
    try:
        groups = channel_groups(model)
    except InputError as exc:
        return [f"pruning.layers: {exc}"]
    problems = []
    for group in groups:
        asked = {name: channel[name] for name in group.producers if name in channel}
        if asked and group.reason is not None:
            where = ", ".join(_where("pruning", rules, name) for name in asked)
            problems.append(f"{where}: pattern 'channel' is not allowed here: channel group {group.name} must be "
                            f"left alone ({group.reason}) (allowed: unstructured, 2:4, or a null rule)")
        elif len(set(asked.values())) > 1:
            where = ", ".join(dict.fromkeys(f"pruning.layers.{applicable_rule(rules, name) or DEFAULT}" for name in asked))
            problems.append(f"{where}: layers {', '.join(asked)} share channel group {group.name} but ask for "
                            "different pruning (allowed: the same settings for all of them)")
    return problems
