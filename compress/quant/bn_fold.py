"""Fold eval-mode BatchNorm into the convolution that feeds it.

With σ_c = √(var_c + ε), an eval-mode BN computes γ_c (y_c − μ_c) / σ_c + β_c. When y = W ∗ x + b,
the composition is one convolution with

    W'_c = W_c · γ_c / σ_c,        b'_c = (b_c − μ_c) · γ_c / σ_c + β_c

(Jacob et al. 2018, "Quantization and Training of Neural Networks for Efficient Integer-Arithmetic-
Only Inference", §3.2). The BN module is replaced by ``nn.Identity`` under its own name, so module
names elsewhere (``stem.0``) are unchanged; a conv without bias gets one (named ``bias``).

Pairs are found with torch.fx: a BN whose only input is the output of a conv that feeds nothing
else. Models that fx cannot trace fall back to ``nn.Sequential(..., conv, bn, ...)`` neighbours.
"""

from __future__ import annotations

import torch
from torch import nn

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def fold_conv_bn_(conv: nn.Module, bn: nn.Module) -> None:
    """In place: ``conv`` becomes conv∘bn (eval-mode statistics); ``bn`` is left untouched."""
    with torch.no_grad():
        sigma = torch.sqrt(bn.running_var.double() + bn.eps)
        gamma = bn.weight.double() if bn.affine else torch.ones_like(sigma)
        beta = bn.bias.double() if bn.affine else torch.zeros_like(sigma)
        factor = gamma / sigma
        bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(sigma)
        shape = (-1,) + (1,) * (conv.weight.ndim - 1)
        conv.weight.copy_((conv.weight.double() * factor.reshape(shape)).to(conv.weight.dtype))
        new_bias = ((bias - bn.running_mean.double()) * factor + beta).to(conv.weight.dtype)
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias)
        else:
            conv.bias.copy_(new_bias)


def fold_batchnorm_(model: nn.Module) -> list[tuple[str, str]]:
    """Fold every BN that directly follows a conv; returns the (conv, bn) module names folded."""
    pairs = foldable_pairs(model)
    for conv_name, bn_name in pairs:
        fold_conv_bn_(model.get_submodule(conv_name), model.get_submodule(bn_name))
        model.set_submodule(bn_name, nn.Identity())
    return pairs


def foldable_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """The (conv, bn) module names ``fold_batchnorm_`` folds: found on the fx graph, or in
    ``nn.Sequential`` children when the model cannot be traced."""
    pairs = _pairs_by_fx(model)
    return _pairs_in_sequentials(model) if pairs is None else pairs


def _pairs_by_fx(model: nn.Module) -> list[tuple[str, str]] | None:
    """(conv, bn) names where the BN's input is a conv output used only by that BN; None if fx fails."""
    from compress.vocab.tracing import fx_graph

    graph = fx_graph(model)
    if graph is None:  # untraceable: the caller uses the structural fallback
        return None
    pairs = []
    for node in graph.nodes:
        if not _is_module(model, node, _BATCHNORMS):
            continue
        source = node.args[0]
        if isinstance(source, torch.fx.Node) and _is_module(model, source, _CONVS) and len(source.users) == 1:
            pairs.append((str(source.target), str(node.target)))
    return pairs


def _pairs_in_sequentials(model: nn.Module) -> list[tuple[str, str]]:
    pairs = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (conv_key, conv), (bn_key, bn) in zip(children, children[1:]):
            if isinstance(conv, _CONVS) and isinstance(bn, _BATCHNORMS):
                prefix = f"{name}." if name else ""
                pairs.append((prefix + conv_key, prefix + bn_key))
    return pairs


def _is_module(model: nn.Module, node: "torch.fx.Node", kinds: tuple[type, ...]) -> bool:
    return node.op == "call_module" and isinstance(model.get_submodule(str(node.target)), kinds)

