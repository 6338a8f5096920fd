"""Models and data as users hold them: spec strings, checkpoint directories, modules."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from compress.errors import InputError

if TYPE_CHECKING:
    from torch import nn

    from compress.data.source import DataSource


# The spec each module was loaded from, so that a module the user holds can still be saved as a
# checkpoint that rebuilds it (weak: forgetting a module forgets its entry).
_LOADED_FROM: "weakref.WeakKeyDictionary[nn.Module, str]" = weakref.WeakKeyDictionary()


def resolve_model(model: "str | nn.Module", weights: str | None = None, task: str | None = None
                  ) -> tuple["nn.Module", str]:
    """(module, name): a spec string or checkpoint directory is loaded (``task``: the head of an
    ``hf:`` model); a module is used as is (its name is the spec it was loaded from, else its
    class name)."""
    from torch import nn

    if isinstance(model, str):
        from compress.checkpoint.load import load_model

        module = load_model(model, weights, task)
        if weights is None:
            _LOADED_FROM[module] = model
        return module, model
    if isinstance(model, nn.Module):
        if weights is not None or task is not None:
            raise InputError("weights and task apply to a model spec; a module is used as it is")
        return model, loaded_from(model) or type(model).__name__
    raise InputError(f"cannot use {type(model).__name__} as a model; give a model spec string, "
                     "a checkpoint directory or a torch.nn.Module")


def first_samples(data: "DataSource", max_samples: int | None) -> "DataSource":
    """The first ``max_samples`` examples (all of them when None)."""
    if max_samples is not None and max_samples < 1:
        raise InputError(f"max_samples must be at least 1, got {max_samples}")
    if max_samples is None or len(data) <= max_samples:
        return data
    return data.subset(range(max_samples), f"{data.name}[:{max_samples}]")


def data_source(data: Any, role: str, model: "nn.Module | None" = None, split: str | None = None,
                seq_len: int | None = None) -> "DataSource":
    """``as_data`` with the verb's role (builtins: ``train`` to calibrate, ``heldout`` to evaluate);
    ``seq_len``: tokens per block of causal-LM text data."""
    from compress.data.adapt import as_data

    return as_data(data, split, role, model, seq_len=seq_len)


def loaded_from(model: "nn.Module") -> str | None:
    """The spec ``model`` was loaded from by ``resolve_model``, if it was."""
    return _LOADED_FROM.get(model)
