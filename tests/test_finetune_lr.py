"""lr="auto" on a linear least-squares student, where the Hessian is known in closed form:
L(W) = mean over the N·k output entries of (X Wᵀ − T)², so H = (2 / (N k)) · I_k ⊗ XᵀX and
λ_max = 2 λ_max(XᵀX) / (N k)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compress.data.source import TensorData
from compress.finetune.sharpness import LR_FRACTION
from compress.finetune.spec import FinetuneSpec
from compress.finetune.train import finetune_

pytestmark = pytest.mark.usefixtures("single_thread")

N, D, K = 32, 8, 2


def _problem() -> tuple[nn.Linear, nn.Linear, TensorData]:
    torch.manual_seed(0)
    student, teacher = nn.Linear(D, K, bias=False).double(), nn.Linear(D, K).double()
    inputs = torch.randn(N, D, dtype=torch.float64) * torch.linspace(1.0, 2.0, D, dtype=torch.float64)
    return student, teacher, TensorData("regression", (inputs,), None)


def _closed_form(student: nn.Linear, teacher: nn.Linear, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Hessian, gradient) of L at the student's weights, flattened row-major like W."""
    scale = 2 / (N * K)
    hessian = scale * torch.kron(torch.eye(K, dtype=torch.float64), inputs.T @ inputs)
    with torch.no_grad():
        gradient = scale * (student(inputs) - teacher(inputs)).T @ inputs
    return hessian, gradient.reshape(-1)


def _spec(**changes) -> FinetuneSpec:
    base = {"mode": "kd", "kd_loss": "mse", "batch_size": N, "max_steps": 1, "momentum": 0.0, "sharpness_every": 0}
    return FinetuneSpec(**{**base, **changes})


def _gd_loss(lr: float, momentum: float, steps: int = 150) -> tuple[float, float]:
    """(first, last) loss of constant-lr full-batch SGD (heavy ball) on the problem."""
    student, teacher, data = _problem()
    optimizer = torch.optim.SGD(student.parameters(), lr=lr, momentum=momentum)
    losses = []
    for _ in range(steps):
        loss = nn.functional.mse_loss(student(*data.inputs), teacher(*data.inputs).detach())
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return losses[0], losses[-1]


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_auto_lr_is_the_stability_formula_and_the_limit_is_sharp(momentum: float) -> None:
    student, teacher, data = _problem()
    sharpness = float(torch.linalg.eigvalsh(_closed_form(student, teacher, data.inputs[0])[0]).max())
    result = finetune_(student, teacher, data, _spec(momentum=momentum))
    assert result.initial_sharpness == pytest.approx(sharpness, rel=1e-9)
    limit = 2 * (1 + momentum) / sharpness
    assert result.lr == pytest.approx(LR_FRACTION * limit, rel=1e-9)
    with torch.no_grad():  # the teacher is affine, the student linear: the optimum is not zero
        targets = teacher(*data.inputs)
        best = torch.linalg.lstsq(data.inputs[0], targets).solution
        optimum = float(((data.inputs[0] @ best - targets) ** 2).mean())
    first, last = _gd_loss(result.lr, momentum)
    assert last < optimum + 1e-6 * first, (first, last, optimum)
    first, last = _gd_loss(1.05 * limit, momentum)
    assert last > 1e3 * first, (first, last)


def test_auto_lr_with_plain_gd_decreases_the_loss_every_step() -> None:
    student, teacher, data = _problem()
    result = finetune_(student, teacher, data, _spec(epochs=50, max_steps=40, sharpness_every=10))
    assert result.steps == len(result.losses) == 40  # max_steps cuts the 50 epochs short
    assert all(b < a for a, b in zip(result.losses, result.losses[1:]))
    assert [point.step for point in result.sharpness_history] == [0, 10, 20, 30]
    for point in result.sharpness_history:  # a quadratic: the sharpness never changes
        assert point.sharpness == pytest.approx(result.initial_sharpness, rel=1e-9)
        assert point.stable_lr == pytest.approx(2 / point.sharpness, rel=1e-12)


def test_adamw_uses_the_preconditioned_sharpness() -> None:
    """λ_max(P^-½ H P^-½), P = √v + ε with v the squared gradient (one probe batch), and the
    Adam limit 2(1+β₁)/((1−β₁)λ)."""
    student, teacher, data = _problem()
    hessian, gradient = _closed_form(student, teacher, data.inputs[0])
    scaling = (gradient.abs() + 1e-8).rsqrt()
    sharpness = float(torch.linalg.eigvalsh(scaling[:, None] * hessian * scaling[None, :]).max())
    result = finetune_(student, teacher, data, _spec(optimizer="adamw", momentum=0.9))
    assert result.initial_sharpness == pytest.approx(sharpness, rel=1e-8)
    assert result.lr == pytest.approx(LR_FRACTION * 2 * 1.9 / (0.1 * sharpness), rel=1e-8)
