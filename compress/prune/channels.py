"""Structured channel pruning that removes channels: every module of a group is rebuilt smaller.

For a group of C coupled channels (``dependencies.py``) each channel c gets a score: the sum over
the group's Conv2d/Linear members of the ℓ2 norm of c's weight slice (producer rows, depthwise
filters, consumer input columns; Li et al. 2017, "Pruning Filters for Efficient ConvNets", and
the group norm of Fang et al. 2023, "DepGraph"), or the sum of the second-order saliency
½ w_q² H_qq of those weights (``saliency.py``). The top k channels are kept, k = ``kept_width(C, ratio, round_to)``
(``compress.vocab.channels``, the one rounding rule), in their original order.

Exactness: the pruned model equals the unpruned model with the removed channels' activations
zeroed where they are produced (producer rows and bias, depthwise filters and bias, BatchNorm γ
and β set to 0: ``zero_channels_``), since the ops between producers and consumers map 0 to 0.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.errors import InputError
from compress.vocab.groups import ChannelGroup, Member

WEIGHTED = ("out", "dw", "in")


def channel_view(tensor: torch.Tensor, member: Member) -> torch.Tensor:
    """A member's weight-shaped tensor as [C, ·]: row c holds every entry that channel c owns."""
    if member.role == "in":
        return tensor.transpose(0, 1).reshape(tensor.shape[1] // member.block, -1)
    return tensor.reshape(tensor.shape[0], -1)


def channel_scores(model: nn.Module, group: ChannelGroup,
                   saliency: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Per channel: Σ_members ‖slice‖₂ (magnitude), or Σ_members Σ_slice s_q when ``saliency`` is
    given (keyed by module name; members without one are skipped)."""
    weighted = [m for m in group.members if m.role in WEIGHTED]
    if saliency is None:
        views = [channel_view(model.get_submodule(m.module).weight.detach(), m).norm(dim=1) for m in weighted]
    else:
        views = [channel_view(saliency[m.module], m).sum(dim=1) for m in weighted if m.module in saliency]
        if not views:
            raise InputError(f"criterion obs for channel group {group.name} needs a saliency for one of "
                            f"{', '.join(dict.fromkeys(m.module for m in weighted))}")
    return torch.stack(views).double().sum(dim=0)


def kept_channels(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` highest scores (ties: lower index), in increasing order."""
    return torch.sort(torch.argsort(scores, descending=True, stable=True)[:keep]).values


def zero_channels_(model: nn.Module, group: ChannelGroup, kept: torch.Tensor) -> None:
    """The masked reference: zero the removed channels' activations where they are produced."""
    removed = torch.ones(group.channels, dtype=torch.bool)
    removed[kept] = False
    with torch.no_grad():
        for member in group.members:
            if member.role != "in":
                module = model.get_submodule(member.module)
                for tensor in (module.weight, module.bias):
                    if tensor is not None:
                        tensor[removed] = 0


def remove_channels_(model: nn.Module, group: ChannelGroup, kept: torch.Tensor,
                     companions: dict[str, torch.Tensor] | None = None) -> None:
    """Rebuild every member with only the ``kept`` channels; weight-shaped ``companions`` (e.g.
    saliency, keyed by module name) are sliced like their module's weight, in place in the dict."""
    for member in group.members:
        module = model.get_submodule(member.module)
        axis, index = (1, feature_index(kept, member.block)) if member.role == "in" else (0, kept)
        _slice_(module, ("weight",) if member.role == "in" else _channel_tensors(module), axis, index)
        if companions is not None and member.module in companions and member.role != "bn":
            companions[member.module] = companions[member.module].index_select(axis, index)
        _resize(module, member.role, len(kept))


def feature_index(kept: torch.Tensor, block: int) -> torch.Tensor:
    """Channel c of a flattened input is features [c·block, (c+1)·block)."""
    return (kept[:, None] * block + torch.arange(block)).reshape(-1)


def _channel_tensors(module: nn.Module) -> tuple[str, ...]:
    names = ("weight", "bias", "running_mean", "running_var")
    return tuple(n for n in names if getattr(module, n, None) is not None)


def _slice_(module: nn.Module, names: tuple[str, ...], axis: int, index: torch.Tensor) -> None:
    for name in names:
        tensor = getattr(module, name)
        sliced = tensor.detach().index_select(axis, index.to(tensor.device)).clone()
        if isinstance(tensor, nn.Parameter):
            setattr(module, name, nn.Parameter(sliced, requires_grad=tensor.requires_grad))
        else:
            setattr(module, name, sliced)


def _resize(module: nn.Module, role: str, width: int) -> None:
    """Update the shape attributes that ``repr``, export and re-instantiation read."""
    if isinstance(module, nn.Linear):
        if role == "in":
            module.in_features = module.weight.shape[1]
        else:
            module.out_features = width
    elif isinstance(module, nn.Conv2d):
        if role in ("in", "dw"):
            module.in_channels = width
        if role in ("out", "dw"):
            module.out_channels = width
        if role == "dw":
            module.groups = width
    else:
        module.num_features = width
