"""FinetuneSpec / FinetuneResult validation and round trips; the losses against float64 formulas."""

from __future__ import annotations

import math

import pytest
import torch

from compress.errors import ConfigError, InputError
from compress.finetune.losses import Reference, training_loss
from compress.finetune.spec import FinetuneResult, FinetuneSpec, SharpnessPoint


def test_spec_round_trip_and_every_problem_reported_at_once() -> None:
    spec = FinetuneSpec(mode="kd", lr=0.01, optimizer="adamw", kd_loss="cosine", max_steps=7)
    assert FinetuneSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError) as error:
        FinetuneSpec(mode="fp8", lr=-1.0, kd_weight=2.0, momentum=1.0)
    message = str(error.value)
    for key in ("mode", "lr", "kd_weight", "momentum"):
        assert key in message
    with pytest.raises(ConfigError, match="unknown keys lr_scale"):
        FinetuneSpec.from_dict({"lr_scale": 2})
    with pytest.raises(ConfigError, match="epochs"):
        FinetuneSpec(epochs=True)


def test_result_round_trip() -> None:
    result = FinetuneResult(steps=3, epochs_run=1.5, lr=0.1, lr_source="auto", initial_sharpness=4.0,
                            sharpness_history=(SharpnessPoint(0, 4.0, 0.1, 0.95),), losses=(1.0, 0.5, 0.25),
                            resumed_from_step=2, world_size=2, seconds=0.1, sharpness_seconds=0.05)
    assert FinetuneResult.from_dict(result.to_dict()) == result


def _outputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 7, generator=generator, dtype=torch.float64)
    return student, teacher, torch.randint(0, 7, (5,), generator=generator)


def test_logit_distillation_is_hinton_kl_times_t_squared() -> None:
    student, teacher, _ = _outputs()
    temperature = 3.0
    loss = training_loss(FinetuneSpec(mode="kd", temperature=temperature), has_labels=True)
    expected = 0.0
    for s, t in zip(student.tolist(), teacher.tolist()):
        p = [math.exp(v / temperature) for v in t]
        q = [math.exp(v / temperature) for v in s]
        p, q = [v / sum(p) for v in p], [v / sum(q) for v in q]
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q)) * temperature**2 / len(student)
    assert float(loss(student, Reference(None, teacher))) == pytest.approx(expected, rel=1e-12)


def test_embedding_distillation_and_mixing() -> None:
    student, teacher, labels = _outputs()
    cosine = training_loss(FinetuneSpec(mode="kd", kd_loss="cosine"), has_labels=False)
    expected = sum(1 - float(s @ t) / float(s.norm() * t.norm()) for s, t in zip(student, teacher)) / len(student)
    assert float(cosine(student, Reference(None, teacher))) == pytest.approx(expected, rel=1e-12)
    mse = training_loss(FinetuneSpec(mode="kd", kd_loss="mse"), has_labels=False)
    assert float(mse(student, Reference(None, teacher))) == pytest.approx(float(((student - teacher) ** 2).mean()))
    spec = FinetuneSpec(mode="qat+kd", kd_loss="mse", kd_weight=0.25)
    ce = float(torch.nn.functional.cross_entropy(student, labels))
    mixed = training_loss(spec, has_labels=True)(student, Reference(labels, teacher))
    assert float(mixed) == pytest.approx(0.75 * ce + 0.25 * float(((student - teacher) ** 2).mean()), rel=1e-12)
    without_labels = training_loss(spec, has_labels=False)(student, Reference(None, teacher))
    assert float(without_labels) == pytest.approx(float(((student - teacher) ** 2).mean()), rel=1e-12)
    qat = training_loss(FinetuneSpec(mode="qat"), has_labels=True)(student, Reference(labels, teacher))
    assert float(qat) == pytest.approx(ce, rel=1e-12)
