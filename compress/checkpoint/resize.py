"""Give a freshly built model the layer widths a channel-pruned state dict has.

Channel pruning removes rows/columns, so the saved tensors are smaller than the architecture the
model spec builds. Every Conv2d, Linear and BatchNorm2d whose saved shapes differ is rebuilt at the
saved width (a depthwise conv stays depthwise: groups = channels); everything else is untouched,
and ``load_state_dict(strict=True)`` afterwards checks the rest.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.vocab.layers import is_compressible


def resize_to_state_dict_(model: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    for name, module in list(model.named_modules()):
        replacement = _resized(module, name, state)
        if replacement is not None:
            model.set_submodule(name, replacement)
    return model


def _resized(module: nn.Module, name: str, state: dict[str, torch.Tensor]) -> nn.Module | None:
    prefix = f"{name}." if name else ""
    if is_compressible(module) and f"{prefix}weight" in state:
        shape = tuple(state[f"{prefix}weight"].shape)
        if shape == tuple(module.weight.shape):
            return None
        return _conv(module, shape) if isinstance(module, nn.Conv2d) else nn.Linear(
            shape[1], shape[0], bias=module.bias is not None)
    if isinstance(module, nn.BatchNorm2d) and f"{prefix}running_mean" in state:
        width = state[f"{prefix}running_mean"].shape[0]
        if width != module.num_features:
            return nn.BatchNorm2d(width, eps=module.eps, momentum=module.momentum, affine=module.affine)
    return None


def _conv(module: nn.Conv2d, shape: tuple[int, ...]) -> nn.Conv2d:
    depthwise = module.groups > 1 and module.groups == module.in_channels
    groups = shape[0] if depthwise else module.groups
    return nn.Conv2d(shape[1] * groups, shape[0], module.kernel_size, module.stride, module.padding,
                     module.dilation, groups, module.bias is not None, module.padding_mode)
