"""The planner's view of coupled channel groups (``compress.vocab.groups``): which group each
layer produces and which it reads, and which channels a group keeps at a pruned fraction.

Apply removes a whole group when any of its producers asks for it; the planner therefore treats
a group's pruned fraction as one decision: every member layer (producers, depthwise convs, and
consumers whose input columns shrink) carries it in its option (``LayerOption.sparsity`` for
producers, ``input_sparsity`` for consumers), and equality ties make all members agree. The kept
channels are chosen by the same function as apply (``compress.prune.apply.kept_indices``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from compress.prune.apply import kept_indices
from compress.prune.channels import feature_index
from compress.prune.records import PruneSettings
from compress.vocab.groups import ChannelGroup, channel_groups
from compress.vocab.options import LayerOption
from compress.vocab.tracing import fx_graph


@dataclass(frozen=True)
class LayerChannels:
    """A layer's part in the prunable groups: the group it produces (``out`` or depthwise) and the
    group it reads (``in``; None for depthwise convs, whose input is their own group)."""

    out_group: str | None = None
    in_group: str | None = None
    in_block: int = 1  # input features per channel of in_group (H·W after flatten)


@dataclass
class ChannelPlan:
    """The prunable groups of a model by name, each layer's part, and a cache of kept channels."""

    model: nn.Module
    groups: dict[str, ChannelGroup]
    layers: dict[str, LayerChannels]
    _kept: dict[tuple[str, float], torch.Tensor] = field(default_factory=dict)

    def kept(self, group: str, sparsity: float) -> torch.Tensor:
        """The channels of ``group`` kept when the fraction ``sparsity`` is pruned (as apply keeps them)."""
        key = (group, sparsity)
        if key not in self._kept:
            self._kept[key] = kept_indices(self.model, self.groups[group], PruneSettings(sparsity, "channel"), {})
        return self._kept[key]

    def kept_rows_columns(self, name: str, option: LayerOption) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The rows and columns of the layer's weight that survive the option's channel removal."""
        part = self.layers.get(name, LayerChannels())
        rows = columns = None
        if option.channel_sparsity() > 0 and part.out_group is not None:
            rows = self.kept(part.out_group, option.channel_sparsity())
        if option.input_sparsity > 0 and part.in_group is not None:
            columns = feature_index(self.kept(part.in_group, option.input_sparsity), part.in_block)
        return rows, columns

    def group_sparsity(self, name: str, group: str, option: LayerOption) -> float:
        """The pruned fraction of ``group`` an option of layer ``name`` implies."""
        part = self.layers[name]
        return option.channel_sparsity() if part.out_group == group else option.input_sparsity

    def members(self, group: str) -> list[str]:
        """The planned layers whose options carry the group's fraction (producers, then readers)."""
        return list(dict.fromkeys(m.module for m in self.groups[group].members if m.role in ("out", "dw", "in")))


def channel_plan(model: nn.Module, names: list[str]) -> ChannelPlan:
    """The prunable groups among the planned layers ``names``; none when the model cannot be traced
    (then no channel option is offered)."""
    if fx_graph(model) is None:
        return ChannelPlan(model, {}, {})
    planned = set(names)
    groups = {g.name: g for g in channel_groups(model) if g.reason is None
              and all(m.module in planned for m in g.members if m.role != "bn")}
    layers: dict[str, LayerChannels] = {}
    for group in groups.values():
        for member in (m for m in group.members if m.role != "bn"):
            part = layers.get(member.module, LayerChannels())
            if member.role in ("out", "dw"):
                part = LayerChannels(group.name, part.in_group, part.in_block)
            elif member.role == "in":
                part = LayerChannels(part.out_group, group.name, member.block)
            layers[member.module] = part
    return ChannelPlan(model, groups, layers)
