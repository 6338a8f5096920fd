"""The pruning verb: ``prune_model_(model, settings, saliency) -> PruneRecords``.

Per layer (module name → ``PruneSettings``): ``channel`` removes the coupled channel group the
layer produces (``channels.py``; the layers of one group must agree on their settings), then
``unstructured`` / ``2:4`` attach persistent masks (``persist.py``) to the (possibly already
narrowed) weights. Scores: |w| for ``magnitude``; √s for ``obs``, which ranks weights by the
saliency s (``saliency.py``) with the same mask functions (a channel's ℓ2 norm of √s is √Σ s).
"""

from __future__ import annotations

import torch
from torch import nn

from compress.errors import InputError
from compress.prune.channels import channel_scores, kept_channels, remove_channels_
from compress.vocab.groups import ChannelGroup, channel_groups
from compress.prune.masks import pruning_mask
from compress.prune.persist import apply_mask_
from compress.prune.records import GroupRecord, MaskRecord, PruneRecords, PruneSettings
from compress.vocab.channels import kept_width
from compress.vocab.layers import is_compressible


def prune_model_(model: nn.Module, settings: dict[str, PruneSettings],
                 saliency: dict[str, torch.Tensor] | None = None) -> PruneRecords:
    """In place: prune every named Conv2d/Linear layer as its settings say; ``saliency`` (keyed by
    layer name, weight-shaped) is needed for the layers whose criterion is ``obs``."""
    saliency = dict(saliency or {})
    _check(model, settings, saliency)
    channel = {name: s for name, s in settings.items() if s.pattern == "channel"}
    groups = prune_channels_(model, channel, saliency) if channel else {}
    masks = {name: _mask_layer_(model.get_submodule(name), s, saliency.get(name))
             for name, s in settings.items() if s.pattern != "channel"}
    return PruneRecords(masks, groups)


def choose_channels(model: nn.Module, settings: dict[str, PruneSettings],
                    saliency: dict[str, torch.Tensor] | None = None) -> dict[str, tuple[ChannelGroup, torch.Tensor | None]]:
    """For every group produced by a named layer, the channels to keep (None: left alone, see the
    group's reason), all scored on the unpruned model so the choice does not depend on order."""
    chosen, claimed = {}, set()
    for group in channel_groups(model):
        requested = {name: settings[name] for name in group.producers if name in settings}
        claimed |= requested.keys()
        if requested:
            chosen[group.name] = (group, kept_indices(model, group, _one_setting(group, requested), saliency or {}))
    unused = sorted(settings.keys() - claimed)
    if unused:
        raise InputError(f"layers {', '.join(unused)} never run in the model's forward pass: nothing to prune")
    return chosen


def prune_channels_(model: nn.Module, settings: dict[str, PruneSettings],
                    saliency: dict[str, torch.Tensor]) -> dict[str, GroupRecord]:
    """Remove channels from every group produced by a named layer; ``saliency`` entries are sliced
    along. Groups that cannot be pruned are left alone, with the reason in their record."""
    records = {}
    for name, (group, kept) in choose_channels(model, settings, saliency).items():
        if kept is not None:
            remove_channels_(model, group, kept, saliency)
        width = group.channels if kept is None else len(kept)
        records[name] = GroupRecord(tuple(str(m) for m in group.members), group.channels, width, group.reason)
    return records


def _one_setting(group: ChannelGroup, requested: dict[str, PruneSettings]) -> PruneSettings:
    if len(set(requested.values())) > 1:
        listed = "; ".join(f"{name}: {s}" for name, s in requested.items())
        raise InputError(f"layers of channel group {group.name} ask for different pruning ({listed}); "
                        "their channels are coupled, so give them the same settings")
    return next(iter(requested.values()))


def kept_indices(model: nn.Module, group: ChannelGroup, setting: PruneSettings,
                 saliency: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The channels of ``group`` that ``setting`` keeps (None: the group is left alone): the same
    choice the planner prices and apply removes."""
    if group.reason is not None:
        return None
    scores = channel_scores(model, group, saliency if setting.criterion == "obs" else None)
    return kept_channels(scores, kept_width(group.channels, setting.ratio, setting.round_to))


def _mask_layer_(layer: nn.Module, setting: PruneSettings, saliency: torch.Tensor | None) -> MaskRecord:
    scores = layer.weight.detach() if setting.criterion == "magnitude" else saliency.clamp(min=0).sqrt()
    try:
        mask = pruning_mask(scores, setting.ratio, setting.pattern)
    except ValueError as exc:
        raise InputError(f"cannot prune {type(layer).__name__} {tuple(layer.weight.shape)} as 2:4: {exc}") from exc
    apply_mask_(layer, mask)
    return MaskRecord(setting, 1 - int(mask.sum()) / mask.numel())


def _check(model: nn.Module, settings: dict[str, PruneSettings], saliency: dict[str, torch.Tensor]) -> None:
    modules = dict(model.named_modules())
    for name, setting in settings.items():
        layer = modules.get(name)
        if layer is None or not is_compressible(layer):
            found = "no such module" if layer is None else type(layer).__name__
            raise InputError(f"cannot prune {name!r}: only Conv2d and Linear layers are pruned ({found})")
        if setting.criterion == "obs" and name not in saliency:
            raise InputError(f"criterion obs for {name} needs its saliency (see compress.prune.saliency)")
        if name in saliency and saliency[name].shape != layer.weight.shape:
            raise InputError(f"saliency for {name} has shape {tuple(saliency[name].shape)}, "
                            f"its weight {tuple(layer.weight.shape)}")
