"""Training losses for recovery fine-tuning.

- task: cross-entropy against the data's labels (``compress.curvature.losses.cross_entropy``: class
  logits ``[B, C]``, or a causal LM's per-token logits ``[B, T, V]`` against next-token targets,
  mean over the positions with a target);
- ``logits`` KD (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"):
  T² · KL(softmax(t/T) ‖ softmax(s/T)), averaged over the batch; the T² keeps the gradient's
  scale independent of the temperature T;
- ``cosine`` KD: mean over samples of 1 − cos(s, t) (outputs flattened per sample), for
  embedding models such as ``builtin:minilm``;
- ``mse`` KD: mean squared difference of all output entries.

``qat+kd`` mixes them: (1 − α)·task + α·KD with α = kd_weight; without labels only KD remains.

Feature distillation (``kd_layers``, ``compress.finetune.features``) adds w · feature_distillation
to the loss above, w = kd_layers_weight: for each matched module l, the squared error of the student's
output summed over its entries, relative to the teacher's squared norm,
    D_l = Σ_i ‖s_li − t_li‖² / Σ_i ‖t_li‖²,
averaged over the modules (the relative form makes modules of different scale count alike; TinyBERT,
Jiao et al. 2020, §3.1, uses the plain MSE of hidden states). For an output ``[B, T, ...]`` of a
text batch the rows i are its real tokens (padding, attention mask 0, is left out: the model's
output ignores it); for any other output (a Conv2d's ``[B, C, H, W]``) every entry counts.

Token outputs ``[B, T, V]``: every KD loss compares one row per predicted position, ``[N, V]``,
so it is a mean per token, not per sequence; with next-token targets the positions are those
with a target (padding and the stream's last token are left out), else all ``B·T`` positions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from compress.curvature.losses import cross_entropy
from compress.data.text import IGNORE_INDEX
from compress.errors import ConfigError
from compress.finetune.spec import FinetuneSpec


@dataclass(frozen=True)
class Reference:
    """What a batch's loss compares the student's output with: labels, the teacher's output, the
    teacher's features (with ``kd_layers``) and the batch's real tokens (text batches)."""

    labels: torch.Tensor | None
    teacher: torch.Tensor | None
    teacher_features: tuple[torch.Tensor, ...] | None = None
    tokens: torch.Tensor | None = None


Features = tuple[torch.Tensor, tuple[torch.Tensor, ...]]  # (output, features): ``WithFeatures``
TrainingLoss = Callable[[torch.Tensor | Features, Reference], torch.Tensor]


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


def feature_distillation(student: tuple[torch.Tensor, ...], teacher: tuple[torch.Tensor, ...],
                         tokens: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over modules of Σ‖s − t‖² / Σ‖t‖² over the real tokens (module docstring)."""
    return torch.stack([relative_squared_error(s, t, tokens) for s, t in zip(student, teacher, strict=True)]).mean()


def relative_squared_error(student: torch.Tensor, teacher: torch.Tensor, tokens: torch.Tensor | None) -> torch.Tensor:
    """Σ‖s − t‖² / Σ‖t‖², over the rows of real tokens when ``tokens`` [B, T] indexes the output."""
    if student.shape != teacher.shape:
        raise ConfigError(f"finetune.kd_layers: a module's output has shape {list(student.shape)} in the student "
                          f"but {list(teacher.shape)} in the teacher; match modules of equal output shape")
    if tokens is not None and student.ndim >= 3 and student.shape[:2] == tokens.shape:
        student, teacher = student[tokens], teacher[tokens]
    teacher = teacher.to(student.dtype)
    return (student - teacher).square().sum() / teacher.square().sum().clamp_min(torch.finfo(student.dtype).tiny)


def distillation_loss(spec: FinetuneSpec) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if spec.kd_loss == "logits":
        return lambda s, t: logit_distillation(s, t, spec.temperature)
    return cosine_distillation if spec.kd_loss == "cosine" else mse_distillation


def token_rows(output: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Per-token outputs ``[B, T, V]`` as rows ``[N, V]`` of the positions with a next-token
    target (all positions without targets); any other output as it is."""
    if output.ndim != 3:
        return output
    if labels is not None and labels.ndim == 2:
        return output[labels != IGNORE_INDEX]
    return output.flatten(0, 1)


def training_loss(spec: FinetuneSpec, has_labels: bool) -> TrainingLoss:
    """The loss of ``spec.mode`` given whether the data has labels (checked by the caller); with
    ``kd_layers`` the model's output is ``(output, features)`` and the feature term is added."""
    loss = _output_loss(spec, has_labels)
    if not spec.uses_features:
        return loss
    weight = spec.kd_layers_weight

    def with_features(output: Features, ref: Reference) -> torch.Tensor:
        final, features = output
        return loss(final, ref) + weight * feature_distillation(features, ref.teacher_features, ref.tokens)

    return with_features


def _output_loss(spec: FinetuneSpec, has_labels: bool) -> TrainingLoss:
    kd = distillation_loss(spec)

    def distill(output: torch.Tensor, ref: Reference) -> torch.Tensor:
        return kd(token_rows(output, ref.labels), token_rows(ref.teacher, ref.labels))

    if spec.mode == "qat":
        return lambda output, ref: cross_entropy(output, ref.labels)
    if spec.mode == "kd" or not has_labels:
        return distill
    weight = spec.kd_weight
    return lambda output, ref: (1 - weight) * cross_entropy(output, ref.labels) + weight * distill(output, ref)
