"""Sharpness λ_max of the training loss and the learning rate it allows.

Gradient descent on a quadratic with Hessian H is stable iff η < 2/λ_max(H); heavy-ball
momentum β (Polyak 1964) raises the limit to 2(1 + β)/λ_max. Cohen et al. 2021 ("Gradient
Descent on Neural Networks Typically Occurs at the Edge of Stability", arXiv 2103.00065) show
the same limit governs neural-network training. Adam is heavy ball with momentum β₁ and step
η(1 − β₁) in coordinates preconditioned by P = diag(√v̂ + ε), so its limit is
2(1 + β₁) / ((1 − β₁) · λ_max(P⁻¹H)) (Cohen et al. 2022, "Adaptive Gradient Methods at the Edge
of Stability", arXiv 2207.14484); λ_max(P⁻¹H) = λ_max(P^-½ H P^-½), which Lanczos measures.

``lr="auto"`` uses LR_FRACTION = ½ of the limit: for plain GD that is η = 1/λ_max, the step
that removes the error along the top eigenvector in one step without oscillating, and it leaves
a factor 2 of headroom for the sharpening that training causes (Cohen et al. 2021: sharpness
rises until it reaches 2/η) and for the spread between mini-batch and full-data curvature.

λ_max is the largest Ritz value of a few Lanczos steps (Golub & Van Loan §10.1) on the
project's curvature operator, with the model in eval mode (one fixed matrix: no dropout).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from compress.curvature.distributed import all_reduce_sum
from compress.curvature.lanczos import lanczos
from compress.curvature.operator import CurvatureOperator
from compress.curvature.params import ParamLayout
from compress.data.source import Batch
from compress.errors import InputError
from compress.finetune.losses import Reference, TrainingLoss

LR_FRACTION = 0.5
INITIAL_LANCZOS_STEPS = 20  # converges the top eigenvalue in ~20 products (DESIGN §7)
TRACKING_LANCZOS_STEPS = 8
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class ProbeData:
    """Fixed global batches for measuring sharpness: this rank's slice of each, its references,
    and each global batch's size (the operator weights batch b by n_b / Σ n)."""

    shards: list[Batch]
    references: list[Reference]
    global_sizes: list[int]

    def first(self) -> ProbeData:
        return ProbeData(self.shards[:1], self.references[:1], self.global_sizes[:1])


def stability_limit(sharpness: float, optimizer: str, momentum: float) -> float:
    """The largest stable learning rate: 2(1+β)/λ (sgd), 2(1+β₁)/((1−β₁)λ) (adamw, λ
    preconditioned); unbounded (inf) where the loss has no positive curvature."""
    if not sharpness > 0:
        return float("inf")
    limit = 2 * (1 + momentum) / sharpness
    return limit / (1 - momentum) if optimizer == "adamw" else limit


def auto_lr(sharpness: float, optimizer: str, momentum: float) -> float:
    """LR_FRACTION of the stability limit."""
    if not sharpness > 0:
        raise InputError(f"the loss has no positive curvature here (λ_max = {sharpness:.3g}), so no learning "
                        "rate follows from it; give lr explicitly")
    return LR_FRACTION * stability_limit(sharpness, optimizer, momentum)


def top_eigenvalue(model: nn.Module, probe: ProbeData, loss: TrainingLoss, steps: int, seed: int,
                   scaling: torch.Tensor | None = None) -> float:
    """λ_max of S H S over ``probe`` (S = diag(scaling), identity when None), same on every rank."""
    with evaluation_mode(model):
        operator = CurvatureOperator(model, probe.shards, probe.references, loss, sum(probe.global_sizes))
        matvec = operator.matvec if scaling is None else (lambda v: scaling * operator.matvec(scaling * v))
        generator = torch.Generator().manual_seed(seed)
        start = torch.randn(operator.dim, generator=generator, dtype=torch.float64).to(operator.dtype)
        return float(lanczos(matvec, start, steps).ritz()[0].max())


def adam_scaling(model: nn.Module, optimizer: torch.optim.Optimizer | None, probe: ProbeData,
                 loss: TrainingLoss) -> torch.Tensor:
    """P^-½ with P = √v̂ + ε: v̂ from Adam's bias-corrected second moments once it has taken a
    step, before that the mean of the squared mini-batch gradients over ``probe``."""
    layout = ParamLayout.of(model)
    named = dict(model.named_parameters())
    params = [named[name] for name in layout.names]
    if optimizer is not None and all(optimizer.state.get(p) for p in params):
        beta2 = optimizer.param_groups[0]["betas"][1]
        second = torch.cat([_bias_corrected(optimizer.state[p], beta2).reshape(-1) for p in params])
    else:
        second = _mean_squared_gradient(model, params, probe, loss)
    return (second.sqrt() + ADAM_EPS).rsqrt().to(params[0].dtype)


def _bias_corrected(state: dict, beta2: float) -> torch.Tensor:
    return state["exp_avg_sq"] / (1 - beta2 ** float(state["step"]))


def _mean_squared_gradient(model: nn.Module, params: list[torch.Tensor], probe: ProbeData,
                           loss: TrainingLoss) -> torch.Tensor:
    """(1/B) Σ_b g_b², g_b the gradient of global batch b (summed over its rank slices)."""
    total = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)
    with evaluation_mode(model):
        for shard, reference, size in zip(probe.shards, probe.references, probe.global_sizes):
            value = loss(model(*shard.inputs), reference) * (len(shard) / size)
            gradient = torch.autograd.grad(value, params, allow_unused=True)
            flat = torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, gradient)])
            total += all_reduce_sum(flat.double()) ** 2
    return total / len(probe.shards)


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside, each module's own training flag restored after."""
    flags = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, flag in flags.items():
            module.train(flag)
