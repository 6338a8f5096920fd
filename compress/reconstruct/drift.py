"""Input-drift correction: reconstruct a layer toward what the float model computes on the same data
(the "asymmetric calibration" of GPTAQ / GPTQv2, Li et al. 2025, and Qronos, Zhang et al. 2025).

True-sequential GPTQ fits Ŵ to the layer's own float weight on the inputs x̃ produced by the already
compressed earlier layers, ‖(W − Ŵ)·x̃‖². What matters is the float model's output, W·x with x the
float model's input to the same layer on the same sample. Per output row w, with H̃ = 2·Σ x̃x̃ᵀ/N,
H = 2·Σ xxᵀ/N and C = 2·Σ x̃xᵀ/N (``stats.LayerStats``), the drift objective, damped as GPTQ is
(a ridge λ toward the float weight w₀ = w with dead-input columns zeroed), is

    D(ŵ) = Σ (w·x − ŵ·x̃)²/N + ½λ‖ŵ − w₀‖²
         = ½(ŵ − w*)(H̃ + λI)(ŵ − w*)ᵀ + D(w*),   (H̃ + λI)·w*ᵀ = C·wᵀ + λ·w₀ᵀ,
    D(w*) = ½·w·H·wᵀ + ½λ‖w₀‖² − ½·w*(H̃ + λI)w*ᵀ.

So the unchanged GPTQ/SparseGPT sweep and scale re-fit, run on the target w* with H̃ and the same λ,
minimise D; the sweep's predicted error plus D(w*) is D(ŵ). With x = x̃ (no drift) C = H̃ and
w* = w₀, D(w*) = 0: plain GPTQ exactly. The damping is GPTQ's own λ = damp·mean(diag H̃) and the
same ridge toward the float weight, so the correction adds no hyper-parameter and, where the
calibration tokens do not determine a direction of w*, it falls back to the float weight rather
than to a fit of noise. A dead input of the compressed model (x̃_j ≡ 0) has its weight set to 0 as
in GPTQ, but its float contribution w_j·x_j stays in the target: the other inputs compensate it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from compress.curvature.distributed import all_reduce_sum
from compress.errors import InputError
from compress.reconstruct.cholesky import damped_cholesky
from compress.reconstruct.refit import row_objective
from compress.reconstruct.stats import CHUNK_ROWS, LayerStats, StatsAccumulator, layer_samples


class DriftAccumulator(StatsAccumulator):
    """``StatsAccumulator`` that also sums C = Σ x̃ xᵀ and Σ x xᵀ against the float model's input x
    to the same layer on the same batch (``add_pair``; samples matched one to one, padding left out
    by the same ``token_mask``)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__(module)
        self.cross = torch.zeros_like(self.products)
        self.reference_products = torch.zeros_like(self.products)

    def add_pair(self, inputs: torch.Tensor, reference: torch.Tensor) -> None:
        """Accumulate the layer input ``inputs`` and the float model's input ``reference``."""
        samples = layer_samples(self.module, inputs.detach(), self.token_mask)
        floats = layer_samples(self.module, reference.detach(), self.token_mask)
        if samples.shape != floats.shape:
            raise InputError(f"the float model's layer input {tuple(reference.shape)} does not match the "
                             f"compressed model's {tuple(inputs.shape)}")
        self.add_samples(samples)
        for start in range(0, samples.shape[1], CHUNK_ROWS):
            chunk, reference_chunk = samples[:, start : start + CHUNK_ROWS], floats[:, start : start + CHUNK_ROWS]
            self.cross += torch.bmm(chunk.transpose(1, 2), reference_chunk).to(torch.float64)
            self.reference_products += torch.bmm(reference_chunk.transpose(1, 2), reference_chunk).to(torch.float64)

    @property
    def nbytes(self) -> int:
        return super().nbytes + 2 * self.cross.numel() * self.cross.element_size()

    def result(self) -> LayerStats:
        """``StatsAccumulator.result`` with C = 2·Σ x̃xᵀ/N and H = 2·Σ xxᵀ/N (summed over ranks)."""
        stats = super().result()
        cross, reference = all_reduce_sum(self.cross.clone()), all_reduce_sum(self.reference_products.clone())
        return replace(stats, cross=2 * cross / stats.count, reference_hessian=2 * reference / stats.count)


@dataclass(frozen=True)
class DriftTarget:
    """The targets w* of a layer's rows [N, K] (dead-input columns 0), per group the relative damp
    the solve used and its raises, and each row's irreducible drift objective D(w*) [N]."""

    rows: torch.Tensor
    damps: list[float]
    raises: list[int]
    offset: torch.Tensor


def drift_target(rows: torch.Tensor, hessians: torch.Tensor, dead: torch.Tensor, stats: LayerStats,
                 damp: float) -> DriftTarget:
    """w* for every row of ``rows`` [N, K] (the float weight, float64), group by group: ``hessians``
    [groups, K, K] is H̃ with dead inputs fixed (``cholesky.fix_dead_inputs``; ``dead`` [groups, K]),
    ``stats`` holds C and H; λ = ``damp``·mean(diag H̃), raised as GPTQ raises it."""
    if stats.cross is None or stats.reference_hessian is None:
        raise InputError("input-drift correction needs drift statistics (cross and reference Hessian)")
    per_group = rows.shape[0] // stats.groups
    targets, offsets, damps, raises = [], [], [], []
    for g in range(stats.groups):
        weight = rows[g * per_group : (g + 1) * per_group]
        lower, used, raised = damped_cholesky(hessians[g], damp)
        ridge = used * float(torch.diagonal(hessians[g]).mean())
        base = weight * ~dead[g]
        target = torch.cholesky_solve((weight @ stats.cross[g].T + ridge * base).T, lower).T * ~dead[g]
        damped = hessians[g] + ridge * torch.eye(hessians.shape[-1], dtype=hessians.dtype)
        offsets.append(row_objective(weight, stats.reference_hessian[g]) + 0.5 * ridge * base.pow(2).sum(dim=1)
                       - row_objective(target, damped))
        targets.append(target), damps.append(used), raises.append(raised)
    return DriftTarget(torch.cat(targets), damps, raises, torch.cat(offsets))
