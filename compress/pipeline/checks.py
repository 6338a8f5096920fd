"""Input checks every verb runs before its real work, each failure one line naming the input and
the fix: non-finite weights, no compressible layer, empty data, non-finite inputs, targets of the
wrong dtype, shape or range, inputs the model rejects (its own message, shortened), outputs that
are not floating-point (an argmax) or have no per-example feature axis to compare, non-finite
outputs (naming the first layer that produces them) and, for verbs that train, outputs that are
not differentiable.

The model is run once on the first batch (twice when it trains), so the checks cost a forward pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from compress.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from compress.data.source import Batch, DataSource

CHECK_BATCH = 64  # examples of the first batch the model is run on


def check_inputs(model: "nn.Module", model_name: str, data: "DataSource", compress: bool = True,
                 trains: bool = False) -> None:
    """Every check below, in the order a user would fix things; ``compress``: the verb compresses
    the model, so it needs at least one compressible layer; ``trains``: it takes gradients through
    the model (fine-tuning), so the output must be differentiable."""
    check_weights(model, model_name)
    if compress:
        check_compressible(model, model_name)
    batch = check_samples(data)
    check_first_forward(model, model_name, data.name, batch, getattr(data, "targets", None))
    if trains:
        check_differentiable(model, model_name, batch)


def check_weights(model: "nn.Module", model_name: str) -> None:
    """Refuse NaN or Inf in any parameter or floating buffer (names the first); lazy parameters,
    not yet materialised, are skipped."""
    import torch
    from torch.nn.parameter import is_lazy

    for name, tensor in (*model.named_parameters(), *model.named_buffers()):
        if not is_lazy(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InputError(f"model {model_name} has {_nonfinite_kind(tensor)} in {name}; "
                             "fix or retrain the weights before compressing")


def check_compressible(model: "nn.Module", model_name: str) -> None:
    """Refuse a model with no layer the stages compress (Conv2d or Linear)."""
    from compress.vocab.layers import LAYER_KINDS, compressible_layers

    if not compressible_layers(model):
        kinds = " or ".join(k.__name__ for k in LAYER_KINDS)
        raise InputError(f"model {model_name} has no compressible layer ({kinds}); there is nothing to compress")


def check_samples(data: "DataSource") -> "Batch":
    """The first batch of ``data``, after refusing empty data, NaN/Inf inputs (in-memory data is
    scanned whole, other data its first batch) and targets that are not integer class indices."""
    if len(data) == 0:
        raise InputError(f"data {data.name} is empty (0 samples); give at least one example")
    batch = next(iter(data.batches(CHECK_BATCH)), None)
    if batch is None:
        raise InputError(f"data {data.name} yielded no batch although it reports {len(data)} samples")
    _check_finite_inputs(data, getattr(data, "inputs", batch.inputs))
    if batch.targets is not None:
        _check_targets(data.name, batch)
    return batch


def check_first_forward(model: "nn.Module", model_name: str, data_name: str, batch: "Batch",
                        all_targets: "torch.Tensor | None" = None) -> None:
    """Run ``model`` on ``batch``: inputs it rejects, non-finite outputs, class targets out of the
    outputs' range (``all_targets`` when the data holds them in memory, else the batch's), outputs
    that are not floating-point, and (data without labels, compared with the uncompressed model)
    outputs without a feature axis are reported in one line."""
    import torch

    from compress.evaluation import forward

    with torch.no_grad():
        output = forward(model, batch, model_name, data_name)
        if not bool(torch.isfinite(output).all()):
            where = first_nonfinite_layer(model, batch)
            raise InputError(f"model {model_name} outputs {_nonfinite_kind(output)} on data {data_name} "
                             f"(finite inputs); {where} is the first module to produce them")
    if batch.targets is not None:
        targets = all_targets if isinstance(all_targets, torch.Tensor) else batch.targets
        _check_target_range(model_name, data_name, output, targets)
    if not output.is_floating_point():
        raise InputError(f"model {model_name} outputs {str(output.dtype).removeprefix('torch.')} values, not "
                         "floating-point scores; return the logits (or embeddings), not class indices")
    if batch.targets is None and output.ndim < 2:
        raise InputError(f"model {model_name} outputs shape {tuple(output.shape)} on data {data_name} without "
                         "labels; comparing with the uncompressed model needs outputs of shape (batch, features)")


def check_differentiable(model: "nn.Module", model_name: str, batch: "Batch") -> None:
    """Refuse (for fine-tuning) a model whose output has no gradient with respect to its parameters
    (``compress.curvature.finite.check_differentiable``, the curvature stage's check), naming it."""
    from compress.curvature.finite import check_differentiable as differentiable

    try:
        differentiable(model, batch)
    except InputError as exc:
        raise InputError(f"model {model_name}: {exc} (fine-tuning follows its gradient)") from None


def first_nonfinite_layer(model: "nn.Module", batch: "Batch") -> str:
    """Where NaN or Inf first appears: the first module (in execution order) whose output has them
    (``compress.curvature.finite.first_nonfinite_module``), worded for a message."""
    from compress.curvature.finite import first_nonfinite_module

    name = first_nonfinite_module(model, batch)
    return "the model's own code (no submodule)" if name == "(root)" else f"module {name!r}"


def _check_finite_inputs(data: "DataSource", inputs: tuple) -> None:
    import torch

    for position, tensor in enumerate(inputs):
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            sample = int((~torch.isfinite(tensor)).reshape(tensor.shape[0], -1).any(dim=1).nonzero()[0]) if tensor.ndim else 0
            raise InputError(f"data {data.name} has {_nonfinite_kind(tensor)} in input {position} "
                             f"(first at sample {sample}); clean the data before compressing")


def _check_targets(data_name: str, batch: "Batch") -> None:
    import torch

    targets = batch.targets
    if not isinstance(targets, torch.Tensor):
        raise InputError(f"data {data_name} has targets of type {type(targets).__name__}; "
                         "targets must be a tensor of integer class indices")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise InputError(f"data {data_name} has {str(targets.dtype).removeprefix('torch.')} targets; "
                         "class targets must be integer indices (targets.long()), or give no targets "
                         "(inputs only) to compare with the uncompressed model")
    if targets.ndim == 0 or targets.shape[0] != len(batch):
        raise InputError(f"data {data_name} has targets of shape {tuple(targets.shape)} for {len(batch)} "
                         "inputs; give one class index per example")


def _check_target_range(model_name: str, data_name: str, output: "torch.Tensor", targets: "torch.Tensor") -> None:
    """Class indices lie in [0, classes); token targets (one per position) may be the ignore index."""
    from compress.data.text import IGNORE_INDEX

    if output.ndim < 2:
        raise InputError(f"model {model_name} outputs shape {tuple(output.shape)}; class targets need "
                         "outputs of shape (batch, classes)")
    if targets.ndim != output.ndim - 1:
        raise InputError(f"data {data_name} has targets of shape {tuple(targets.shape)} but model {model_name} "
                         f"outputs shape {tuple(output.shape)}; give one class index per output row")
    classes = int(output.shape[-1])
    used = targets[targets != IGNORE_INDEX] if targets.ndim > 1 else targets
    if used.numel() and (int(used.max()) >= classes or int(used.min()) < 0):
        raise InputError(f"data {data_name} has class targets in [{int(used.min())}, {int(used.max())}] but "
                         f"model {model_name} outputs {classes} classes; targets must lie in [0, {classes - 1}]")


def _nonfinite_kind(tensor: "torch.Tensor") -> str:
    import torch

    return "NaN" if bool(torch.isnan(tensor).any()) else "Inf"
