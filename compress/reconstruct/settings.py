"""Which layers of an apply spec are reconstructed, and how: the recipe's ``QuantSettings`` and
``PruneSettings`` turned into one ``ReconstructSettings`` per layer.

A layer is reconstructed when its weights are quantized with ``method: gptq`` or it is pruned
(unstructured / 2:4) with criterion ``wanda`` or ``sparsegpt``. One sweep does both: a layer with
GPTQ weights and a ``magnitude`` mask gets the magnitude mask chosen first and compensated in the
sweep; ``obs`` masks need the gradient saliency of the quantized model and stay outside the sweep.
"""

from __future__ import annotations

from compress.prune.records import RECONSTRUCTED, PruneSettings
from compress.quant.records import QuantSettings
from compress.reconstruct.layer import ReconstructSettings


def reconstruct_settings(quantization: dict[str, QuantSettings],
                         pruning: dict[str, PruneSettings]) -> dict[str, ReconstructSettings]:
    """The layers to reconstruct and their settings (channel pruning is not part of it)."""
    result = {}
    for name in dict.fromkeys([*quantization, *pruning]):
        quant, prune = quantization.get(name), pruning.get(name)
        gptq = quant is not None and quant.weight_bits is not None and quant.method == "gptq"
        masked = prune is not None and prune.pattern != "channel"
        prunes = masked and (prune.criterion in RECONSTRUCTED or (gptq and prune.criterion == "magnitude"))
        if not (gptq or prunes):
            continue
        sweep = quant if gptq else QuantSettings()
        result[name] = ReconstructSettings(
            bits=quant.weight_bits if gptq else None,
            weight_block=quant.weight_block if gptq else None,
            ratio=prune.ratio if prunes else 0.0,
            pattern=prune.pattern if prunes else "unstructured",
            prune_method=prune.criterion if prunes else "sparsegpt",
            damp=sweep.damp, block_size=sweep.block_size, act_order=sweep.act_order,
            symmetric=quant.symmetric if gptq else True, input_drift=sweep.input_drift,
        )  # fmt: skip
    return result


def loss_aware_layers(quantization: dict[str, QuantSettings], pruning: dict[str, PruneSettings],
                      reconstructed: dict[str, ReconstructSettings]) -> list[str]:
    """Reconstructed layers whose settings ask for loss-aware row weights."""
    return [name for name in reconstructed
            if getattr(quantization.get(name), "loss_aware", False) or getattr(pruning.get(name), "loss_aware", False)]
