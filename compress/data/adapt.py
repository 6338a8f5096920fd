"""``as_data``: whatever a user holds → a ``DataSource``.

Accepted: a data spec string (DESIGN §2), ``(inputs, targets)`` tensors (targets may be None,
inputs may be a tuple of tensors), a ``torch.utils.data.Dataset`` of ``x`` or ``(x, y)``, a
``DataLoader`` (its dataset is read; batching is the verb's), a ``DataSource``, or a forward-loop
callable ``loop(model)`` in ModelOpt's style: it is run once on ``model`` and the inputs the model
receives are recorded. A forward loop carries no labels, so it serves calibration-only uses (the
loss is then self-distillation against the uncompressed model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from compress.data.source import DataSource, TensorData, dataset_data
from compress.errors import InputError

if TYPE_CHECKING:
    from torch import nn

DATA_FORMS = ("a data spec string, (inputs, targets) tensors, a Dataset, a DataLoader, a DataSource "
              "or a forward-loop callable loop(model)")


def as_data(data: Any, split: str | None = None, role: str = "train", model: "nn.Module | None" = None,
            name: str = "data", seq_len: int | None = None) -> DataSource:
    """``data`` as a DataSource. ``split`` / ``role`` pick the part of a spec string as
    ``load_data`` does (builtins default to ``role``); ``model`` is needed for a forward loop and
    for a text file (an ``hf:`` model's tokenizer and task; ``seq_len`` tokens per causal-LM block)."""
    import torch

    if isinstance(data, DataSource):
        return data
    if seq_len is not None and not isinstance(data, str):
        raise InputError("seq_len applies to a text file given by its path; tokenise other data yourself")
    if isinstance(data, str):
        from compress.data.spec import load_data

        return load_data(data, split, role, model, seq_len)
    if isinstance(data, torch.utils.data.DataLoader):
        return dataset_data(name, data.dataset)
    if isinstance(data, torch.utils.data.Dataset):
        return dataset_data(name, data)
    if isinstance(data, (tuple, list)) or isinstance(data, torch.Tensor):
        from compress.data.spec import tensor_data

        return tensor_data(name, data, "is")
    if callable(data):
        return recorded_forward_loop(data, model, name)
    raise InputError(f"cannot use {type(data).__name__} as data; give {DATA_FORMS}")


def recorded_forward_loop(loop: Callable[["nn.Module"], object], model: "nn.Module | None",
                          name: str) -> TensorData:
    """Run ``loop(model)`` once, recording the positional inputs of every call to ``model``; the
    recorded batches, concatenated, are the data (no targets)."""
    import torch

    if model is None:
        raise InputError("a forward-loop callable needs the model it runs; pass model= as well")
    calls: list[tuple[torch.Tensor, ...]] = []
    handle = model.register_forward_pre_hook(lambda _m, args: calls.append(tuple(a.detach() for a in args)))
    try:
        with torch.no_grad():
            loop(model)
    finally:
        handle.remove()
    if not calls:
        raise InputError(f"the forward loop {getattr(loop, '__name__', loop)!r} never called the model")
    if len({len(c) for c in calls}) != 1 or not all(isinstance(t, torch.Tensor) for c in calls for t in c):
        raise InputError("the forward loop called the model with varying or non-tensor arguments")
    inputs = tuple(torch.cat([c[i] for c in calls]) for i in range(len(calls[0])))
    return TensorData(name, inputs, None)
