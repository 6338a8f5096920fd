"""Build a curvature operator from a model and data: shard the batches, fix the references
(targets or the uncompressed model's outputs), and refuse nondeterministic set-ups."""

from __future__ import annotations

import torch
from torch import nn

from compress.curvature.distributed import rank_and_world
from compress.curvature.finite import check_batch, check_differentiable, check_finite_weights
from compress.curvature.losses import loss_function
from compress.curvature.operator import CurvatureOperator
from compress.data.source import Batch, DataSource
from compress.errors import InputError


def prepare_operator(
    model: nn.Module,
    data: DataSource,
    loss: str,
    batch_size: int = 128,
    product: str = "reverse-over-reverse",
    allow_nondeterministic: bool = False,
    reuse_graphs: bool = True,
) -> CurvatureOperator:
    """The operator for ``loss`` (``ce`` needs targets; ``distill`` uses the model's own outputs)
    over ``data``, batches dealt round-robin to the ranks of ``torch.distributed``. Refuses
    NaN/Inf weights, inputs and outputs, non-differentiable outputs and nondeterminism."""
    if loss == "ce" and not data.has_targets:
        raise InputError(f"data {data.name} has no targets; use --loss distill (self-distillation)")
    check_finite_weights(model)
    if not allow_nondeterministic:
        check_eval_mode(model)
    rank, world = rank_and_world()
    dealt = [(i, b) for i, b in enumerate(data.batches(batch_size)) if i % world == rank]
    outputs = [check_batch(model, b, i) for i, b in dealt]
    if dealt:
        check_differentiable(model, dealt[0][1])
    if not allow_nondeterministic and dealt:
        check_deterministic(model, dealt[0][1])
    num_batches = -(-len(data) // batch_size)
    batches = [b for _, b in dealt]
    references = [b.targets if loss == "ce" else output for (_, b), output in zip(dealt, outputs)]
    return CurvatureOperator(model, batches, references, loss_function(loss), len(data), product, reuse_graphs,
                             batch_ids=[i for i, _ in dealt], num_batches=num_batches)


def reference_outputs(model: nn.Module, batch: Batch, loss: str) -> torch.Tensor:
    """What the loss compares with: the targets (ce) or the uncompressed model's outputs (distill)."""
    if loss == "ce":
        return batch.targets
    with torch.no_grad():
        return model(*batch.inputs).detach()


def check_deterministic(model: nn.Module, batch: Batch) -> None:
    """Refuse train-mode BatchNorm/Dropout and any model whose output changes between two
    identical forward passes: the estimators assume one fixed matrix."""
    check_eval_mode(model)
    with torch.no_grad():
        first, second = model(*batch.inputs), model(*batch.inputs)
    if not torch.equal(first, second):
        raise InputError("the model's output differs between two identical forward passes; "
                        "make it deterministic or allow nondeterminism explicitly")


def check_eval_mode(model: nn.Module) -> None:
    """Refuse BatchNorm/Dropout modules in training mode (they change the matrix between products)."""
    training = [name or "(root)" for name, m in model.named_modules() if m.training and _is_stochastic(m)]
    if training:
        raise InputError(
            f"modules in training mode change the curvature between products ({', '.join(training[:3])}); "
            "call model.eval() or allow nondeterminism explicitly"
        )


def _is_stochastic(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd, nn.Dropout))
