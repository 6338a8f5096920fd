"""Fine-tuning losses on a causal LM's per-token outputs: the task loss is the mean next-token
cross-entropy over positions with a target, and every KD loss is a mean per predicted token;
positions without a target (padding, the stream's last token) count for nothing. Checked against
explicit sums written here."""

from __future__ import annotations

import math

import pytest
import torch

from compress.finetune.losses import Reference, training_loss
from compress.finetune.spec import FinetuneSpec

IGNORE = -100


def _case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(2, 4, 5, generator=generator, dtype=torch.float64)
    teacher = torch.randn(2, 4, 5, generator=generator, dtype=torch.float64)
    targets = torch.tensor([[3, 0, 4, IGNORE], [1, 2, IGNORE, IGNORE]])
    return student, teacher, targets


def _kept(targets: torch.Tensor) -> list[tuple[int, int]]:
    return [(b, t) for b in range(targets.shape[0]) for t in range(targets.shape[1]) if targets[b, t] != IGNORE]


def _log_softmax(row: list[float]) -> list[float]:
    norm = math.log(sum(math.exp(z) for z in row))
    return [z - norm for z in row]


def _reference_ce(student: torch.Tensor, targets: torch.Tensor) -> float:
    kept = _kept(targets)
    return sum(-_log_softmax(student[b, t].tolist())[int(targets[b, t])] for b, t in kept) / len(kept)


def _reference_kd(student: torch.Tensor, teacher: torch.Tensor, targets: torch.Tensor, temperature: float) -> float:
    """T² · mean over kept positions of KL(softmax(t/T) ‖ softmax(s/T))."""
    kept = _kept(targets)
    total = 0.0
    for b, t in kept:
        log_p = _log_softmax((teacher[b, t] / temperature).tolist())
        log_q = _log_softmax((student[b, t] / temperature).tolist())
        total += sum(math.exp(lp) * (lp - lq) for lp, lq in zip(log_p, log_q))
    return temperature**2 * total / len(kept)


def _spec(mode: str, **fields: object) -> FinetuneSpec:
    return FinetuneSpec(mode=mode, **fields)


def test_qat_loss_is_the_mean_token_cross_entropy_over_positions_with_a_target() -> None:
    student, teacher, targets = _case()
    loss = training_loss(_spec("qat"), has_labels=True)(student, Reference(targets, None))
    assert float(loss) == pytest.approx(_reference_ce(student, targets), rel=1e-12)


def test_kd_loss_is_a_mean_per_predicted_token() -> None:
    student, teacher, targets = _case()
    loss = training_loss(_spec("kd", temperature=2.0), has_labels=True)(student, Reference(targets, teacher))
    assert float(loss) == pytest.approx(_reference_kd(student, teacher, targets, 2.0), rel=1e-12)


def test_mixed_loss_and_positions_without_target_count_for_nothing() -> None:
    student, teacher, targets = _case()
    spec = _spec("qat+kd", temperature=3.0, kd_weight=0.25)
    loss = training_loss(spec, has_labels=True)
    expected = 0.75 * _reference_ce(student, targets) + 0.25 * _reference_kd(student, teacher, targets, 3.0)
    assert float(loss(student, Reference(targets, teacher))) == pytest.approx(expected, rel=1e-12)
    padded = targets == IGNORE
    moved_student, moved_teacher = student.clone(), teacher.clone()
    moved_student[padded] += 50.0 * torch.randn_like(moved_student[padded])
    moved_teacher[padded] -= 50.0
    assert float(loss(moved_student, Reference(targets, moved_teacher))) == pytest.approx(expected, rel=1e-12)


def test_kd_without_targets_averages_over_every_position() -> None:
    student, teacher, _ = _case()
    everything = torch.zeros(2, 4, dtype=torch.long)
    loss = training_loss(_spec("kd", temperature=1.0), has_labels=False)(student, Reference(None, teacher))
    assert float(loss) == pytest.approx(_reference_kd(student, teacher, everything, 1.0), rel=1e-12)


def test_class_outputs_keep_their_losses() -> None:
    generator = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(6, 3, generator=generator), torch.randn(6, 3, generator=generator)
    labels = torch.tensor([0, 2, 1, 1, 0, 2])
    qat = training_loss(_spec("qat"), has_labels=True)(student, Reference(labels, None))
    assert float(qat) == pytest.approx(float(torch.nn.functional.cross_entropy(student, labels)), rel=1e-6)
    cosine = training_loss(_spec("kd", kd_loss="cosine"), has_labels=True)(student, Reference(labels, teacher))
    expected = float((1 - torch.nn.functional.cosine_similarity(student, teacher, dim=1)).mean())
    assert float(cosine) == pytest.approx(expected, rel=1e-6)
