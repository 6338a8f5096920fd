"""A plan's choices as apply's per-layer settings: the one translation both the plan recipe
(``recipe.py``) and the planner's whole-plan measurement (``measured.SingleLayerLoss.joint``) use,
so what the planner measures is what apply deploys.

Quantization: ``weight_bits`` / ``act_bits`` (other settings at their defaults); a float/float
layer is left out. Pruning: the option's own ``ratio`` and ``pattern`` when it prunes; a channel
option is written for every producer of the group (they carry equal fractions by the planner's
ties), and the input fraction of a consumer is not its own setting (its producer removes it).
Low rank: a rank option is the layer's ``lowrank`` rule (``rank``, Fisher-weighted whitened: ``ranks.RANK_METHOD``), and its weight bits
quantize both factors rounded to nearest (``method: rtn``), as the planner prices it (``ranks.py``).
"""

from __future__ import annotations

from compress.lowrank.settings import LowRankSettings
from compress.plan.ranks import RANK_METHOD
from compress.prune.records import PruneSettings
from compress.quant.records import QuantSettings
from compress.vocab.options import LayerOption


def quant_rule(option: LayerOption, act_signed: bool = True) -> dict[str, int | str | bool | None] | None:
    """The recipe rule of one layer's quantization (None: left float); ``act_signed`` False writes
    quantized activations as asymmetric uint8 (``compress.vocab.costs.signed_activations``); the
    factors of a rank option are rounded to nearest, as the planner prices them."""
    if option.bits is None and option.act_bits is None:
        return None
    rule: dict[str, int | str | bool | None] = {"weight_bits": option.bits, "act_bits": option.act_bits}
    if not act_signed and option.act_bits is not None:
        rule["act_signed"] = False
    return rule if option.rank is None else {**rule, "method": "rtn"}


def prune_rule(option: LayerOption) -> dict[str, float | str] | None:
    """The recipe rule of one layer's own pruning (None: not pruned by this layer)."""
    return {"ratio": option.sparsity, "pattern": option.pattern} if option.sparsity > 0 else None


def lowrank_rule(option: LayerOption) -> dict[str, int | str] | None:
    """The recipe rule of one layer's factorisation (None: kept whole)."""
    return None if option.rank is None else {"rank": option.rank, "method": RANK_METHOD}


def lowrank_settings(options: dict[str, LayerOption]) -> dict[str, LowRankSettings]:
    """Apply's low-rank settings for one option per layer."""
    return {name: LowRankSettings(**rule) for name, o in options.items() if (rule := lowrank_rule(o))}


def plan_settings(options: dict[str, LayerOption],
                  act_signed: bool = True) -> tuple[dict[str, QuantSettings], dict[str, PruneSettings]]:
    """Apply's settings for one option per layer."""
    quantization = {name: QuantSettings(**rule) for name, o in options.items() if (rule := quant_rule(o, act_signed))}
    pruning = {name: PruneSettings(**rule) for name, o in options.items() if (rule := prune_rule(o))}
    return quantization, pruning
