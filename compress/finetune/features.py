"""Intermediate outputs for feature distillation: which modules (``kd_layers``) and a wrapper that
returns their outputs with the model's.

Feature (layer-wise) distillation matches the student's hidden states to the teacher's at chosen
modules, not only at the output (FitNets: Romero et al. 2015, arXiv 1412.6550; TinyBERT: Jiao et
al. 2020, arXiv 1909.10351, §3.1, hidden-state loss per transformer layer). Modules are matched by
name, so teacher and student must share the names: compression keeps them (a factorised Linear
becomes a two-layer ``nn.Sequential`` at the same name, a quantized or pruned layer stays where it
was), and the outputs must have the same shape.

``blocks``: the entries of every outermost ``nn.ModuleList`` of the teacher (a transformer's repeated
layers: ``encoder.layer.0`` … in Hugging Face BERT, ``h.0`` … in GPT-2). A module's output that is a
tuple or list (Hugging Face layers return ``(hidden_states, ...)`` in some versions) counts by its
first entry.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from compress.errors import ConfigError


def feature_layers(teacher: nn.Module, student: nn.Module, choice: str | tuple[str, ...]) -> tuple[str, ...]:
    """The module names ``kd_layers`` stands for (``FinetuneSpec``), each present in both models;
    ``ConfigError`` (one line) for a name either lacks or a ``blocks`` model without blocks."""
    if choice == "none":
        return ()
    names = repeated_blocks(teacher) if choice == "blocks" else tuple(choice)
    if not names:
        raise ConfigError("finetune.kd_layers: blocks found no nn.ModuleList of blocks in the model; "
                          "give a list of module names instead")
    for model, which in ((teacher, "teacher"), (student, "student")):
        known = dict(model.named_modules())
        missing = [name for name in names if name not in known or name == ""]
        if missing:
            raise ConfigError(f"finetune.kd_layers: no module named {missing[0]!r} in the {which} "
                              f"(modules are named as in named_modules(), e.g. {_example(model)!r})")
    return names


def repeated_blocks(model: nn.Module) -> tuple[str, ...]:
    """Names of the entries of every ``nn.ModuleList`` not nested in another one, in model order."""
    lists = [name for name, module in model.named_modules() if isinstance(module, nn.ModuleList)]
    outermost = [name for name in lists if not any(name.startswith(f"{other}.") for other in lists if other != name)]
    return tuple(f"{name}.{child}" if name else child
                 for name in outermost for child, _ in model.get_submodule(name).named_children())


class WithFeatures(nn.Module):
    """``model`` whose forward returns ``(output, (feature of names[0], feature of names[1], ...))``;
    the parameters are the model's (under the prefix ``model.``)."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        captured: dict[str, torch.Tensor] = {}
        handles = [self.model.get_submodule(name).register_forward_hook(partial(_keep, captured, name))
                   for name in self.names]
        try:
            output = self.model(*inputs)
        finally:
            for handle in handles:
                handle.remove()
        unused = [name for name in self.names if name not in captured]
        if unused:
            raise ConfigError(f"finetune.kd_layers: module {unused[0]!r} does not run in the model's forward pass")
        return output, tuple(captured[name] for name in self.names)


def _keep(captured: dict[str, torch.Tensor], name: str, module: nn.Module, inputs: tuple, output: object) -> None:
    """Forward hook: the module's (last call's) ``feature``."""
    captured[name] = feature(output)


def feature(output: object) -> torch.Tensor:
    """The tensor a module's output is matched by: the output, or the first entry of a tuple/list
    output (a transformer block's hidden states)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def _example(model: nn.Module) -> str:
    return next((name for name, _ in model.named_modules() if name), "")
