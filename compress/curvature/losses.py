"""Losses whose curvature we measure: mean over the dataset of a per-sample loss.

- ``ce``: cross-entropy against the data's class targets (or a causal LM's next tokens).
- ``distill``: self-distillation ½‖f(x) − f₀(x)‖² against the uncompressed model's own outputs
  f₀; at the start point its gradient is zero and its Hessian is the Gauss-Newton matrix JᵀJ.
"""

from __future__ import annotations

from typing import Callable

import torch

# loss(output, reference) -> mean over the batch; reference is targets (ce) or teacher outputs
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean of −log softmax(z)_y over the predictions: class logits ``[B, C]`` against ``[B]``
    targets, or per-token logits ``[B, T, V]`` against ``[B, T]`` next-token targets (a causal
    LM), where positions with target ``IGNORE_INDEX`` (padding, no next token) count for nothing."""
    if output.ndim == 3 and targets.ndim == 2:
        from compress.data.text import IGNORE_INDEX

        return torch.nn.functional.cross_entropy(output.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
    return torch.nn.functional.cross_entropy(output, targets)


def self_distillation(output: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return 0.5 * (output - teacher).flatten(1).pow(2).sum(dim=1).mean()


def loss_function(name: str) -> LossFn:
    return {"ce": cross_entropy, "distill": self_distillation}[name]


# Output-Hessian square roots: u = factor(output, r) with r Rademacher has E[u uᵀ] = ∇²_f ℓ_sum, the
# Hessian of the *summed* per-sample loss with respect to the output (the caller scales by 1/N).


def cross_entropy_factor(output: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
    """S r with S Sᵀ = diag(p) − p pᵀ (softmax p over dim 1): S = diag(√p) − p √pᵀ, since
    S Sᵀ = diag(p) − 2 p pᵀ + p (√p·√p) pᵀ. Divided by the positions per sample when the output
    has more than one (the mean of ``cross_entropy`` runs over them too)."""
    p = torch.softmax(output.detach().double(), dim=1)
    root = p.sqrt()
    product = root * probe - p * (root * probe).sum(dim=1, keepdim=True)
    positions = output[0].numel() // output.shape[1]
    return (product / positions**0.5).to(output.dtype)


def self_distillation_factor(output: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
    """½‖f − f₀‖² per sample has output Hessian I: the factor is the identity."""
    return probe.to(output.dtype)


def output_factor(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return {"ce": cross_entropy_factor, "distill": self_distillation_factor}[name]
