"""finetune_ end to end on tiny models: QAT through a straight-through fake-quantizer, BatchNorm
statistics frozen, the teacher untouched, the data order and loss of the first step, bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compress.data.source import TensorData
from compress.errors import InputError
from compress.finetune.losses import cosine_distillation
from compress.finetune.order import epoch_order
from compress.finetune.spec import FinetuneSpec
from compress.finetune.train import finetune_
from compress.testing.tiny import tiny_convnet, tiny_data, tiny_mlp, trained
from tests.helpers.ste import quantize_and_prune_

pytestmark = pytest.mark.usefixtures("single_thread")


def test_qat_kd_recovers_and_keeps_batchnorm_teacher_and_masks() -> None:
    data = tiny_data("conv", 96)
    teacher = trained(tiny_convnet(), data, steps=100)
    teacher_state = copy.deepcopy(teacher.state_dict())
    student = quantize_and_prune_(copy.deepcopy(teacher), bits=3, sparsity=0.5)
    statistics = {k: v.clone() for k, v in student.state_dict().items() if "running" in k}
    spec = FinetuneSpec(mode="qat+kd", epochs=8, batch_size=16, sharpness_every=0, lr=0.05)
    result = finetune_(student, teacher, data, spec)
    assert result.steps == 8 * 6 and len(result.losses) == 48
    assert sum(result.losses[-6:]) < 0.7 * sum(result.losses[:6]), result.losses
    assert not student.training and not any(m.training for m in student.modules())
    for name, value in statistics.items():
        assert torch.equal(student.state_dict()[name], value), name
    for name, value in teacher_state.items():
        assert torch.equal(teacher.state_dict()[name], value), name
    for module in (student.conv, student.mix, student.head):
        mask = module.parametrizations.weight[0].mask
        assert torch.all(module.weight[mask == 0] == 0)


def test_unlabelled_data_distils_embeddings_from_the_first_global_batch() -> None:
    """No labels (as for builtin:minilm): qat+kd is the cosine KD alone; the first step's loss is
    that of the first batch of epoch 0's permutation at the starting weights."""
    labelled = tiny_data("mlp", 40)
    data = TensorData("embeddings", labelled.inputs, None)
    teacher, student = tiny_mlp(), tiny_mlp()
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.3 * torch.randn_like(p))
    start = copy.deepcopy(student)
    spec = FinetuneSpec(mode="qat+kd", kd_loss="cosine", epochs=3, batch_size=8, sharpness_every=5, seed=4)
    result = finetune_(student, teacher, data, spec)
    first = epoch_order(40, seed=4, epoch=0)[:8]
    with torch.no_grad():
        (inputs,) = data.inputs
        expected = cosine_distillation(start(inputs[first]), teacher(inputs[first]))
    assert result.losses[0] == pytest.approx(float(expected), rel=1e-6)
    assert result.lr_source == "auto" and result.initial_sharpness > 0
    assert [p.step for p in result.sharpness_history] == [0, 5, 10]
    assert sum(result.losses[-3:]) < sum(result.losses[:3])


def test_bad_input_is_a_user_error() -> None:
    data = tiny_data("mlp", 16)
    with pytest.raises(InputError, match="teacher"):
        finetune_(tiny_mlp(), None, data, FinetuneSpec(mode="kd"))
    with pytest.raises(InputError, match="no labels"):
        finetune_(tiny_mlp(), None, TensorData("x", data.inputs, None), FinetuneSpec(mode="qat"))
    with pytest.raises(InputError, match="exceeds the 16 training examples"):
        finetune_(tiny_mlp(), tiny_mlp(), data, FinetuneSpec(batch_size=32))


@pytest.mark.slow
def test_minilm_embedding_distillation_after_4_bit_weights() -> None:
    from compress.data.spec import load_data
    from compress.models.spec import build_model

    teacher = build_model("builtin:minilm")
    data = load_data("builtin:sentences", "train", "train")
    student = copy.deepcopy(teacher)
    for module in student.modules():  # 4-bit weights on every Linear, no pruning
        if isinstance(module, nn.Linear):
            quantize_and_prune_(module, bits=4, sparsity=0.0)
    spec = FinetuneSpec(mode="kd", kd_loss="cosine", max_steps=8, batch_size=32, lr=1e-4, optimizer="adamw",
                        sharpness_every=0)
    result = finetune_(student, teacher, data, spec)
    assert sum(result.losses[-2:]) < sum(result.losses[:2]), result.losses
