"""Second-order saliency: the loss increase from removing one weight, s_q = w_q² / (2 [H⁻¹]_qq).

Optimal Brain Surgeon (Hassibi & Stork 1993, "Second order derivatives for network pruning")
removes w_q and moves the other weights optimally, which costs w_q² / (2 [H⁻¹]_qq) at a minimum.
With a diagonal curvature, [H⁻¹]_qq = 1 / H_qq and this is Optimal Brain Damage (LeCun, Denker &
Solla 1990): s_q = ½ w_q² H_qq, the exact change of a quadratic loss when w_q alone is zeroed.
Diagonal curvatures (mean loss L = (1/N) Σ_n ℓ_n, model in eval mode):

- ``fisher``: the true Fisher / Gauss-Newton diagonal, exactly (no label sampling). With the
  output Hessian Λ_n = ∇²_f ℓ_n = Σ_c s_c s_cᵀ (cross-entropy: s_c = √p_c (e_c − p); squared
  error: s_c = e_c), G_qq = (1/N) Σ_n Σ_c (s_cᵀ J_n)_q², from per-sample Jacobians J_n
  (``torch.func.vmap(jacrev)``). It equals H_qq for piecewise-linear (ReLU) nets and for
  squared error on a linear model.
- ``empirical-fisher``: (1/N) Σ_n (∇ℓ_n)_q², per-sample gradients with the data's labels
  (``torch.func.vmap(grad)``); a cheaper, biased stand-in (Kunstner et al. 2019).
- ``hutchinson``: diag(H) ≈ (1/m) Σ_i v_i ⊙ H v_i with Rademacher v_i (Bekas, Kokiopoulou &
  Saad 2007, "An estimator for the diagonal of a matrix"), from the project's HVP operator; each
  coordinate's probe variance is Σ_{j≠q} H_qj², reported as a standard error.

Negative curvature estimates are clamped to 0 in the saliency (removing the weight is predicted
to cost nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, vmap

from compress.curvature.losses import loss_function
from compress.curvature.operator import CurvatureOperator
from compress.curvature.prepare import check_deterministic, prepare_operator, reference_outputs
from compress.data.source import Batch, DataSource
from compress.errors import InputError
from compress.vocab.layers import compressible_layers

CURVATURES = ("fisher", "empirical-fisher", "hutchinson")


@dataclass(frozen=True)
class DiagonalEstimate:
    """A stochastic diagonal, per parameter name, with the standard error of each coordinate."""

    values: dict[str, torch.Tensor]
    stderr: dict[str, torch.Tensor]
    num_probes: int


def obd_saliency(weight: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
    """s_q = ½ w_q² max(H_qq, 0) (LeCun et al. 1990; Hassibi & Stork 1993 with diagonal H)."""
    return 0.5 * weight.detach() ** 2 * diagonal.clamp(min=0)


def layer_saliency(model: nn.Module, diagonal: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OBD saliency of every Conv2d/Linear weight, keyed by module name (what ``prune_model_`` takes)."""
    layers = compressible_layers(model)
    weights = {name: f"{name}.weight" if name else "weight" for name in layers}
    return {name: obd_saliency(layer.weight, diagonal[weights[name]]).to(layer.weight.dtype)
            for name, layer in layers.items() if weights[name] in diagonal}


def fisher_diagonal(model: nn.Module, data: DataSource, loss: str = "ce", kind: str = "fisher",
                    batch_size: int = 64) -> dict[str, torch.Tensor]:
    """The ``fisher`` (exact true Fisher = GGN) or ``empirical-fisher`` diagonal of the mean loss,
    per trainable parameter name."""
    if kind == "empirical-fisher" and loss != "ce":
        raise InputError("the empirical Fisher needs targets (under self-distillation every gradient is 0); "
                        "use the fisher or hutchinson curvature")
    if loss == "ce" and not data.has_targets:
        raise InputError(f"data {data.name} has no targets; use loss distill (self-distillation)")
    check_deterministic(model, next(data.batches(batch_size)))
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    constants = {**{n: p.detach() for n, p in model.named_parameters() if not p.requires_grad},
                 **dict(model.named_buffers())}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    per_batch = _empirical_squares if kind == "empirical-fisher" else _ggn_squares
    for batch in data.batches(batch_size):
        reference = reference_outputs(model, batch, loss)
        for name, squares in per_batch(model, params, constants, batch, reference, loss).items():
            total[name] += squares
    return {name: value / len(data) for name, value in total.items()}


def _per_sample_forward(model: nn.Module, constants: dict[str, torch.Tensor]):
    """f(θ, x) for one sample (no batch dimension in or out), for ``vmap``."""
    def forward(params: dict[str, torch.Tensor], *inputs: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**params, **constants}, tuple(x.unsqueeze(0) for x in inputs)).squeeze(0)
    return forward


def _empirical_squares(model: nn.Module, params: dict, constants: dict, batch: Batch,
                       reference: torch.Tensor, loss: str) -> dict[str, torch.Tensor]:
    """Σ_n (∇ℓ_n)² over the batch."""
    forward, loss_fn = _per_sample_forward(model, constants), loss_function(loss)

    def sample_loss(p: dict, target: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        return loss_fn(forward(p, *inputs).unsqueeze(0), target.unsqueeze(0))

    dims = (None, 0) + (0,) * len(batch.inputs)
    gradients = vmap(grad(sample_loss), in_dims=dims)(params, reference, *batch.inputs)
    return {name: g.pow(2).sum(dim=0) for name, g in gradients.items()}


def _ggn_squares(model: nn.Module, params: dict, constants: dict, batch: Batch,
                 reference: torch.Tensor, loss: str) -> dict[str, torch.Tensor]:
    """Σ_n Σ_c (s_cᵀ J_n)² over the batch, with Λ_n = Σ_c s_c s_cᵀ the output Hessian."""
    forward = _per_sample_forward(model, constants)
    dims = (None,) + (0,) * len(batch.inputs)
    jacobians = vmap(jacrev(forward), in_dims=dims)(params, *batch.inputs)  # name -> [B, *out, *param]
    with torch.no_grad():
        outputs = model(*batch.inputs).flatten(1)
    factors = _output_hessian_factors(outputs, loss)  # [B, C, K]
    squares = {}
    for name, jacobian in jacobians.items():
        flat = jacobian.reshape(len(batch), outputs.shape[1], -1)  # [B, K, P]
        squares[name] = torch.einsum("bck,bkp->bcp", factors, flat).pow(2).sum(dim=(0, 1)).view_as(params[name])
    return squares


def _output_hessian_factors(outputs: torch.Tensor, loss: str) -> torch.Tensor:
    """s_c with ∇²_f ℓ = Σ_c s_c s_cᵀ: √p_c (e_c − p) for cross-entropy on logits (so Σ_c s_c s_cᵀ =
    diag(p) − ppᵀ), e_c for ½‖f − f₀‖²."""
    eye = torch.eye(outputs.shape[1], dtype=outputs.dtype).expand(len(outputs), -1, -1)
    if loss != "ce":
        return eye
    p = torch.softmax(outputs, dim=1)
    return p.sqrt()[:, :, None] * (eye - p[:, None, :])


def hutchinson_diagonal(operator: CurvatureOperator, num_probes: int, seed: int = 0) -> DiagonalEstimate:
    """diag(H) ≈ (1/m) Σ_i v_i ⊙ H v_i, v_i Rademacher (Bekas et al. 2007); unbiased, with the
    sample standard error of each coordinate over the m probes."""
    if num_probes < 2:
        raise InputError(f"num_probes {num_probes} is not allowed (at least 2, for an error bar)")
    generator = torch.Generator().manual_seed(seed)
    samples = torch.empty(num_probes, operator.dim, dtype=torch.float64)
    for i in range(num_probes):
        probe = torch.randint(0, 2, (operator.dim,), generator=generator).to(operator.dtype) * 2 - 1
        samples[i] = (probe * operator.matvec(probe)).double()
    mean, stderr = samples.mean(dim=0), samples.std(dim=0) / num_probes**0.5
    return DiagonalEstimate(operator.layout.unflatten(mean), operator.layout.unflatten(stderr), num_probes)


def estimate_saliency(model: nn.Module, data: DataSource, loss: str = "ce", curvature: str = "fisher",
                      num_probes: int = 64, batch_size: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    """OBD saliency of every Conv2d/Linear weight of ``model`` (eval mode) from the chosen diagonal."""
    if curvature not in CURVATURES:
        raise InputError(f"curvature {curvature!r} is not allowed (allowed: {', '.join(CURVATURES)})")
    if curvature == "hutchinson":
        operator = prepare_operator(model, data, loss, batch_size=batch_size)
        return layer_saliency(model, hutchinson_diagonal(operator, num_probes, seed).values)
    return layer_saliency(model, fisher_diagonal(model, data, loss, curvature, batch_size))
