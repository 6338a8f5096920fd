"""The stored size of a compressed model, per planned layer, as apply deploys it.

Each planned layer is charged for what it stores after its option: its weight (``costs.py``,
narrowed by the channels its group and its input's group remove, or its two factors with their
scales for a rank option, ``ranks.py``), its bias (one float per kept
output channel) and the BatchNorm that follows it. When any layer is quantized, apply folds every
conv → BN pair (``compress.quant.bn_fold``): the BN disappears and the conv stores a bias; else
the BN keeps its per-channel tensors (γ, β, running mean and variance). A BN of a prunable group
that no conv folds is charged to the group's first producer. Every other parameter and buffer
(embeddings, norms, scalar buffers) is fixed, stored as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from compress.plan.channels import ChannelPlan
from compress.plan.costs import FLOAT_BITS, graph_bytes, storage_bits
from compress.plan.ranks import factor_scale_bits, factorised_weight_count
from compress.vocab.channels import kept_width
from compress.vocab.layers import out_width
from compress.vocab.options import LayerOption


def tensor_bits(module: nn.Module, recurse: bool = True) -> int:
    """Bits of every parameter and buffer as stored (their own element sizes)."""
    tensors = [*module.parameters(recurse=recurse), *module.buffers(recurse=recurse)]
    return sum(t.numel() * t.element_size() * 8 for t in tensors)


def _norm_bits(norm: nn.Module, kept: int) -> int:
    """A BatchNorm narrowed to ``kept`` channels: per-channel tensors shrink, scalars stay."""
    tensors = [*norm.parameters(recurse=False), *norm.buffers(recurse=False)]
    return sum((kept if t.ndim else 1) * t.element_size() * 8 for t in tensors)


@dataclass(frozen=True)
class SizeModel:
    """Bits of each planned layer under an option; ``fixed_bits`` is everything else."""

    model: nn.Module
    channels: ChannelPlan
    norms: dict[str, str]  # planned conv -> the BN folded into it
    extra_norms: dict[str, list[str]]  # group's first producer -> BNs of the group no conv folds
    fixed_bits: int

    def kept_fraction(self, name: str, option: LayerOption) -> float:
        """The share of the layer's weight left after channel removal."""
        layer = self.model.get_submodule(name)
        return self._weight_count(name, option) / layer.weight.numel()

    def _kept_out(self, name: str, option: LayerOption) -> int:
        width = out_width(self.model.get_submodule(name))
        part = self.channels.layers.get(name)
        if part is None or part.out_group is None:
            return width
        return kept_width(width, option.channel_sparsity())

    def _weight_count(self, name: str, option: LayerOption) -> int:
        weight = self.model.get_submodule(name).weight
        if option.rank is not None:  # the two factors (a rank option removes no channels)
            return factorised_weight_count(self.model.get_submodule(name), option.rank)
        columns = weight.shape[1]
        part = self.channels.layers.get(name)
        if part is not None and part.in_group is not None and option.input_sparsity > 0:
            channels = self.channels.groups[part.in_group].channels
            columns = kept_width(channels, option.input_sparsity) * part.in_block
        return self._kept_out(name, option) * columns * math.prod(weight.shape[2:])

    def layer_bits(self, name: str, option: LayerOption, folded: bool) -> float:
        """Stored bits of layer ``name`` (weight, bias, its BN, unfolded group BNs) under ``option``."""
        layer = self.model.get_submodule(name)
        kept = self._kept_out(name, option)
        bits = storage_bits(self._weight_count(name, option), kept, option) + factor_scale_bits(layer, option)
        norm = self.norms.get(name)
        if layer.bias is not None or (norm is not None and folded):
            bits += kept * FLOAT_BITS
        if norm is not None and not folded:
            bits += _norm_bits(self.model.get_submodule(norm), kept)
        for extra in self.extra_norms.get(name, []):
            bits += _norm_bits(self.model.get_submodule(extra), kept)
        return bits

    def total_bits(self, choices: dict[str, LayerOption]) -> float:
        """The deployed model's stored bits for one option per planned layer."""
        folded = _folds_batchnorm(choices)
        return self.fixed_bits + sum(self.layer_bits(n, o, folded) for n, o in choices.items())

    def graph_bytes(self, choices: dict[str, LayerOption]) -> int:
        """The predicted ONNX graph beside the stored bits (``costs.graph_bytes``): a layer has a
        bias where it has one or apply folds a BatchNorm into it."""
        folded = _folds_batchnorm(choices)
        return graph_bytes((option, self.model.get_submodule(name).bias is not None or (name in self.norms and folded))
                           for name, option in choices.items())


def _folds_batchnorm(choices: dict[str, LayerOption]) -> bool:
    """Apply folds the BatchNorms into their layers when any planned layer is quantized."""
    return any(o.bits is not None or o.act_bits is not None for o in choices.values())


def size_model(model: nn.Module, names: list[str], channels: ChannelPlan) -> SizeModel:
    """The size model of ``model`` whose planned layers are ``names``."""
    from compress.quant.bn_fold import foldable_pairs

    norms = {conv: norm for conv, norm in foldable_pairs(model) if conv in names}
    folded_norms = set(norms.values())
    extra: dict[str, list[str]] = {}
    for group in channels.groups.values():
        extra[group.name] = [m.module for m in group.members if m.role == "bn" and m.module not in folded_norms]
    partial = SizeModel(model, channels, norms, extra, 0)
    dense = sum(partial.layer_bits(name, LayerOption(None), folded=False) for name in names)
    return SizeModel(model, channels, norms, extra, tensor_bits(model) - int(dense))
