"""A plan's choices as apply's per-layer settings: the one translation both the plan recipe
(``recipe.py``) and the planner's whole-plan measurement (``measured.SingleLayerLoss.joint``) use,
so what the planner measures is what apply deploys.

Quantization: ``weight_bits`` / ``act_bits`` (other settings at their defaults); a float/float
layer is left out. Pruning: the option's own ``ratio`` and ``pattern`` when it prunes; a channel
option is written for every producer of the group (they carry equal fractions by the planner's
ties), and the input fraction of a consumer is not its own setting (its producer removes it).
"""

from __future__ import annotations

from compress.prune.records import PruneSettings
from compress.quant.records import QuantSettings
from compress.vocab.options import LayerOption


def quant_rule(option: LayerOption, act_signed: bool = True) -> dict[str, int | bool | None] | None:
    """The recipe rule of one layer's quantization (None: left float); ``act_signed`` False writes
    quantized activations as asymmetric uint8 (``compress.vocab.costs.signed_activations``)."""
    if option.bits is None and option.act_bits is None:
        return None
    rule = {"weight_bits": option.bits, "act_bits": option.act_bits}
    return rule if act_signed or option.act_bits is None else {**rule, "act_signed": False}


def prune_rule(option: LayerOption) -> dict[str, float | str] | None:
    """The recipe rule of one layer's own pruning (None: not pruned by this layer)."""
    return {"ratio": option.sparsity, "pattern": option.pattern} if option.sparsity > 0 else None


def plan_settings(options: dict[str, LayerOption],
                  act_signed: bool = True) -> tuple[dict[str, QuantSettings], dict[str, PruneSettings]]:
    """Apply's settings for one option per layer."""
    quantization = {name: QuantSettings(**rule) for name, o in options.items() if (rule := quant_rule(o, act_signed))}
    pruning = {name: PruneSettings(**rule) for name, o in options.items() if (rule := prune_rule(o))}
    return quantization, pruning
