"""Run a model and let a callback see each named layer's input and output (forward hooks,
removed afterwards even on error): how the planner measures MACs, input shapes and ranges."""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import nn

Observer = Callable[[str, nn.Module, torch.Tensor, torch.Tensor], None]  # (name, layer, input, output)


def observe_layers(model: nn.Module, inputs: Iterable[tuple[torch.Tensor, ...]], names: list[str],
                   observer: Observer) -> None:
    """``model(*x)`` for every x in ``inputs`` (no grad), calling ``observer`` after each named layer."""
    def hook_for(name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            observer(name, module, args[0], output)
        return hook

    handles = [model.get_submodule(n).register_forward_hook(hook_for(n)) for n in names]
    try:
        with torch.no_grad():
            for batch_inputs in inputs:
                model(*batch_inputs)
    finally:
        for handle in handles:
            handle.remove()
