"""Models and data as users hold them: spec strings, checkpoint directories, modules."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from compress.errors import InputError

if TYPE_CHECKING:
    from torch import nn

    from compress.data.source import DataSource


def resolve_model(model: "str | nn.Module", weights: str | None = None) -> tuple["nn.Module", str]:
    """(module, name): a spec string or checkpoint directory is loaded; a module is used as is."""
    from torch import nn

    if isinstance(model, str):
        from compress.checkpoint.load import load_model

        return load_model(model, weights), model
    if isinstance(model, nn.Module):
        if weights is not None:
            raise InputError("weights apply to a model spec; load them into the module yourself")
        return model, type(model).__name__
    raise InputError(f"cannot use {type(model).__name__} as a model; give a model spec string, "
                     "a checkpoint directory or a torch.nn.Module")


def first_samples(data: "DataSource", max_samples: int | None) -> "DataSource":
    """The first ``max_samples`` examples (all of them when None)."""
    if max_samples is not None and max_samples < 1:
        raise InputError(f"max_samples must be at least 1, got {max_samples}")
    if max_samples is None or len(data) <= max_samples:
        return data
    return data.subset(range(max_samples), f"{data.name}[:{max_samples}]")


def data_source(data: Any, role: str, model: "nn.Module | None" = None, split: str | None = None) -> "DataSource":
    """``as_data`` with the verb's role (builtins: ``train`` to calibrate, ``heldout`` to evaluate)."""
    from compress.data.adapt import as_data

    return as_data(data, split, role, model)
