"""``finetune.dropout``: with false the student trains as it is evaluated (its dropout modules in
eval mode); with true (the default) dropout is active; the key is validated like the others."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compress.data.source import TensorData
from compress.errors import ConfigError
from compress.finetune.losses import cosine_distillation
from compress.finetune.order import epoch_order
from compress.finetune.spec import FinetuneSpec
from compress.finetune.train import finetune_
from compress.testing.tiny import tiny_data

pytestmark = pytest.mark.usefixtures("single_thread")


def _with_dropout() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 16), nn.AlphaDropout(0.3))


def _first_loss(dropout: bool) -> tuple[float, float]:
    """The first step's training loss, and the same batch's loss with the student in eval mode."""
    labelled = tiny_data("mlp", 40)
    data = TensorData("embeddings", (labelled.inputs[0].flatten(1),), None)
    teacher = _with_dropout().eval()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    start = copy.deepcopy(student).eval()
    spec = FinetuneSpec(mode="kd", kd_loss="cosine", epochs=1, max_steps=2, batch_size=8, sharpness_every=0,
                        lr=1e-3, optimizer="adamw", dropout=dropout)
    result = finetune_(student, teacher, data, spec)
    first = epoch_order(40, seed=0, epoch=0)[:8]
    with torch.no_grad():
        (inputs,) = data.inputs
        expected = cosine_distillation(start(inputs[first]), teacher(inputs[first]))
    return result.losses[0], float(expected)


def test_without_dropout_the_training_loss_is_the_eval_loss() -> None:
    loss, evaluated = _first_loss(dropout=False)
    assert loss == pytest.approx(evaluated, rel=1e-6)


def test_with_dropout_the_training_loss_is_noisy() -> None:
    loss, evaluated = _first_loss(dropout=True)
    assert abs(loss - evaluated) > 1e-3 * evaluated


def test_the_key_is_a_boolean() -> None:
    with pytest.raises(ConfigError, match="dropout: 'no' must be true or false"):
        FinetuneSpec(dropout="no")
    assert FinetuneSpec.from_dict(FinetuneSpec(dropout=False).to_dict()).dropout is False
