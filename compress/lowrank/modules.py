"""A Conv2d/Linear weight as per-group matrices, and the two-layer module that replaces it.

Linear m×n → Sequential(Linear(n, r, bias=False), Linear(r, m)). Conv2d (groups g, each group an
m×n matrix with m = out/g, n = in/g·kh·kw in ``F.conv2d``'s patch order) → Sequential(Conv2d(in,
g·r, k×k, same stride/padding/dilation/padding mode, groups g, no bias), Conv2d(g·r, out, 1×1,
groups g)): the k×k conv maps each patch to r features per group, the 1×1 conv mixes them. The
k×k-first order is the one input whitening supports (H is over the k×k patches). A depthwise conv
with one output per group has m = 1 and cannot be factorised.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.errors import ConfigError

def matrix_shape(layer: nn.Module, name: str = "layer") -> tuple[int, int, int]:
    """(m, n, groups) of the layer's weight viewed as ``groups`` matrices of m×n (``ConfigError``
    for anything but Linear and Conv2d)."""
    if isinstance(layer, nn.Linear):
        return layer.out_features, layer.in_features, 1
    if isinstance(layer, nn.Conv2d):
        return layer.out_channels // layer.groups, layer.weight[0].numel(), layer.groups
    raise ConfigError(f"{name} is a {type(layer).__name__}; only Conv2d and Linear layers can be factorised")


def weight_matrices(layer: nn.Module) -> torch.Tensor:
    """The weight as [groups, m, n] (rows of group g are output channels g·m … g·m + m − 1)."""
    m, n, groups = matrix_shape(layer)
    return layer.weight.detach().reshape(groups, m, n)


def factorised_module(layer: nn.Module, first: torch.Tensor, second: torch.Tensor) -> nn.Sequential:
    """The two-layer replacement of ``layer`` with weights ``first`` [groups, r, n] and ``second``
    [groups, m, r]; the bias (if any) goes to the second layer. Same dtype and device as ``layer``."""
    groups, rank, _ = first.shape
    like = {"dtype": layer.weight.dtype, "device": layer.weight.device}
    if isinstance(layer, nn.Linear):
        reduce = nn.Linear(layer.in_features, rank, bias=False, **like)
        expand = nn.Linear(rank, layer.out_features, bias=layer.bias is not None, **like)
    else:
        reduce = nn.Conv2d(layer.in_channels, groups * rank, layer.kernel_size, layer.stride, layer.padding,
                           layer.dilation, groups, bias=False, padding_mode=layer.padding_mode, **like)
        expand = nn.Conv2d(groups * rank, layer.out_channels, 1, groups=groups, bias=layer.bias is not None, **like)
    with torch.no_grad():
        reduce.weight.copy_(first.reshape(reduce.weight.shape))
        expand.weight.copy_(second.reshape(expand.weight.shape))
        if layer.bias is not None:
            expand.bias.copy_(layer.bias)
    return nn.Sequential(reduce, expand).train(layer.training)


def layer_of_shape(layer: nn.Module, m: int, n: int, groups: int) -> nn.Module:
    """``layer`` itself when its weight is ``groups`` matrices of m×n, else an empty layer like it
    of that shape (a channel-pruned width): Linear n → m; Conv2d with groups·m outputs and
    groups·n/(kh·kw) inputs."""
    if matrix_shape(layer) == (m, n, groups):
        return layer
    if isinstance(layer, nn.Linear):
        return nn.Linear(n, m, bias=layer.bias is not None)
    taps = layer.kernel_size[0] * layer.kernel_size[1]
    return nn.Conv2d(groups * n // taps, groups * m, layer.kernel_size, layer.stride, layer.padding,
                     layer.dilation, groups, bias=layer.bias is not None, padding_mode=layer.padding_mode)


def factor_names(name: str) -> tuple[str, str]:
    """The names of the two layers a factorised layer ``name`` becomes (the ``nn.Sequential``'s
    children: the reducing factor, then the expanding one)."""
    return f"{name}.0", f"{name}.1"
