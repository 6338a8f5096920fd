"""Checks that a model and data can have a curvature at all: finite weights, inputs and outputs,
and an output that is a differentiable function of the parameters. Each failure names where it
starts (a NaN compares unequal to itself, so left unchecked it reads as nondeterminism)."""

from __future__ import annotations

import torch
from torch import nn

from compress.data.source import Batch
from compress.errors import InputError


def check_finite_weights(model: nn.Module) -> None:
    """Refuse NaN/Inf in any parameter or buffer, naming the first."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    bad = [name for name, t in tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise InputError(f"the model's {bad[0]} has NaN/Inf values ({len(bad)} tensor(s) in all); "
                         "load finite weights")


def check_batch(model: nn.Module, batch: Batch, index: int) -> torch.Tensor:
    """The model's output on ``batch`` (no graph), after refusing NaN/Inf inputs, outputs that are
    not floating-point tensors, and NaN/Inf outputs (naming the first module producing them)."""
    for position, value in enumerate(batch.inputs):
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise InputError(f"the data has NaN/Inf values (input {position} of batch {index}); clean the data")
    with torch.no_grad():
        output = model(*batch.inputs)
    if not isinstance(output, torch.Tensor) or not output.is_floating_point():
        kind = output.dtype if isinstance(output, torch.Tensor) else type(output).__name__
        raise InputError(f"the model's output is {kind}, not a floating-point tensor: the loss has no curvature; "
                         "return the logits (or embeddings) instead")
    if not bool(torch.isfinite(output).all()):
        raise InputError(f"the model's output has NaN/Inf values on batch {index}; the first module to produce "
                         f"them is {first_nonfinite_module(model, batch)}")
    return output


def check_differentiable(model: nn.Module, batch: Batch) -> None:
    """Refuse a model whose output does not depend differentiably on its trainable parameters."""
    if not any(p.requires_grad for p in model.parameters()):
        raise InputError("the model has no trainable parameters (requires_grad is off everywhere)")
    with torch.enable_grad():
        output = model(*batch.inputs)
    if not output.requires_grad:
        raise InputError("the model's output is not differentiable with respect to its parameters "
                         "(detached or computed under no_grad); return a differentiable output")


def first_nonfinite_module(model: nn.Module, batch: Batch) -> str:
    """The first module, in execution order, whose output holds NaN/Inf values."""
    found: list[str] = []
    names = {module: name or "(root)" for name, module in model.named_modules()}

    def hook(module: nn.Module, _inputs, output) -> None:
        tensors = output if isinstance(output, (tuple, list)) else (output,)
        if not found and any(isinstance(t, torch.Tensor) and t.is_floating_point()
                             and not bool(torch.isfinite(t).all()) for t in tensors):
            found.append(names[module])

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(*batch.inputs)
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else "(root)"
