"""Multiply-accumulates per sample of every Conv / Linear layer, measured by running one batch.

A Conv with C_out output channels, C_in/groups input channels per group, kernel k and output
spatial size P does C_out · (C_in/groups) · k · P MACs; a Linear with weight (m, n) applied to
T tokens does m · n · T. The count is divided by the batch size.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.plan.observe import observe_layers


def layer_macs(model: nn.Module, batch_inputs: tuple[torch.Tensor, ...], names: list[str]) -> dict[str, float]:
    """MACs per sample of each named layer on this batch (its output size times the weight's
    reduction size)."""
    macs = dict.fromkeys(names, 0.0)

    def record(name: str, layer: nn.Module, _x: torch.Tensor, output: torch.Tensor) -> None:
        reduction = layer.weight[0].numel()  # (C_in/groups)·k for conv, n for linear
        macs[name] += output.numel() / output.shape[0] * reduction

    observe_layers(model, [batch_inputs], names, record)
    return macs
