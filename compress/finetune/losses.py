"""Training losses for recovery fine-tuning.

- task: cross-entropy against the data's labels;
- ``logits`` KD (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"):
  T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch; the T² keeps the gradient's
  scale independent of the temperature T;
- ``cosine`` KD: mean over samples of 1 − cos(s, t) (outputs flattened per sample), for
  embedding models such as ``builtin:minilm``;
- ``mse`` KD: mean squared difference of all output entries.

``qat+kd`` mixes them: (1 − α)·task + α·KD with α = kd_weight; without labels only KD remains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from compress.finetune.spec import FinetuneSpec


@dataclass(frozen=True)
class Reference:
    """What a batch's loss compares the student's output with."""

    labels: torch.Tensor | None
    teacher: torch.Tensor | None


TrainingLoss = Callable[[torch.Tensor, Reference], torch.Tensor]


def logit_distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(t/T) ‖ softmax(s/T)), mean over the batch."""
    log_student = F.log_softmax(student / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher / temperature, dim=-1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * temperature**2


def cosine_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """mean over samples of 1 − cos(s, t)."""
    return (1 - F.cosine_similarity(student.flatten(1), teacher.flatten(1), dim=1)).mean()


def mse_distillation(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(student, teacher)


def distillation_loss(spec: FinetuneSpec) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if spec.kd_loss == "logits":
        return lambda s, t: logit_distillation(s, t, spec.temperature)
    return cosine_distillation if spec.kd_loss == "cosine" else mse_distillation


def training_loss(spec: FinetuneSpec, has_labels: bool) -> TrainingLoss:
    """The loss of ``spec.mode`` given whether the data has labels (checked by the caller)."""
    kd = distillation_loss(spec)
    if spec.mode == "qat":
        return lambda output, ref: F.cross_entropy(output, ref.labels)
    if spec.mode == "kd" or not has_labels:
        return lambda output, ref: kd(output, ref.teacher)
    weight = spec.kd_weight
    return lambda output, ref: (1 - weight) * F.cross_entropy(output, ref.labels) + weight * kd(output, ref.teacher)
