"""Multiply-accumulates per sample of every Conv / Linear layer, measured by running one batch.

A Conv with C_out output channels, C_in/groups input channels per group, kernel k and output
spatial size P does C_out · (C_in/groups) · k · P MACs; a Linear with weight (m, n) applied to
T tokens does m · n · T. The count is divided by the batch size.
"""

from __future__ import annotations

import torch
from torch import nn


def layer_macs(model: nn.Module, batch_inputs: tuple[torch.Tensor, ...], names: list[str]) -> dict[str, float]:
    """MACs per sample of each named layer on this batch (its output size times the weight's
    reduction size)."""
    macs: dict[str, float] = {}

    def record(name: str):
        def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            reduction = module.weight[0].numel()  # (C_in/groups)·k for conv, n for linear
            per_output = output.numel() / output.shape[0]
            macs[name] = macs.get(name, 0.0) + per_output * reduction
        return hook

    handles = [model.get_submodule(n).register_forward_hook(record(n)) for n in names]
    try:
        with torch.no_grad():
            model(*batch_inputs)
    finally:
        for handle in handles:
            handle.remove()
    return {name: macs.get(name, 0.0) for name in names}
