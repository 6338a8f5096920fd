"""Input-drift correction: reconstruct a layer toward what the float model computes on the same data
(the "asymmetric calibration" of GPTAQ / GPTQv2, Li et al. 2025, and Qronos, Zhang et al. 2025).

True-sequential GPTQ fits Ŵ to the layer's own float weight on the inputs x̃ produced by the already
compressed earlier layers, ‖(W − Ŵ)·x̃‖². What matters is the float model's output, W·x with x the
float model's input to the same layer on the same sample. Per output row w, with H̃ = 2·Σ x̃x̃ᵀ/N,
H = 2·Σ xxᵀ/N and C = 2·Σ x̃xᵀ/N (``stats.LayerStats``), the drift objective is

    D(ŵ) = Σ (w·x − ŵ·x̃)²/N = ½·ŵH̃ŵᵀ − ŵ·C·wᵀ + ½·wHwᵀ
         = ½(ŵ − w*)H̃(ŵ − w*)ᵀ + D(w*),   H̃·w*ᵀ = C·wᵀ,

so GPTQ's sweep and scale re-fit, run unchanged on the target w* with H̃, minimise D. With x = x̃
(no drift) C = H̃ and w* = w: plain GPTQ. w* is a least-squares fit of d inputs to N calibration
samples (MiniLM: 4,325 tokens for up to 1,536 inputs), so it is solved as a ridge regression toward
the float weight w₀ (w with dead-input columns zeroed, as GPTQ zeroes them):

    (H̃ + λ_t·I)·(w* − w₀)ᵀ = g,   g = C·wᵀ − H̃·w₀ᵀ,

with λ_t chosen per layer (and conv group) by generalised cross-validation (Golub, Heath & Wahba
1979) on the calibration statistics alone: the minimum over ``RIDGE_GRID`` (relative to mean diag H̃)
of GCV(λ) = D(w*_λ) / (1 − df(λ)/N)², df(λ) = tr(H̃(H̃ + λI)⁻¹) the effective number of fitted
inputs; everything comes from one eigen-decomposition H̃ = QΛQᵀ. The sweep keeps GPTQ's own
damping λ on H̃. A dead input of the compressed model (x̃_j ≡ 0) still has its float contribution
w_j·x_j in g: the other inputs compensate it.

Measured (benchmarks/README.md, weights only, no fine-tuning): all-MiniLM-L6-v2 at 4 bits in blocks
of 32 0.9894 → 0.9903 mean cosine (per channel 0.9822 → 0.9839), mnist-cnn +0.0 to +1.1 points in
six bit mixes; with GPTQ's own 1% as the ridge instead of GCV it over-fitted the calibration tokens
(0.9889). On by default (``ReconstructSettings.input_drift``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from compress.curvature.distributed import all_reduce_sum
from compress.errors import InputError
from compress.reconstruct.cholesky import fix_dead_inputs
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


RIDGE_GRID = tuple(10 ** (k / 4) for k in range(-16, 9))  # λ_t / mean(diag H̃): 1e-4 … 100


@dataclass(frozen=True)
class DriftTarget:
    """The targets w* of a layer's rows [N, K] (dead-input columns 0) and, per group, the relative
    ridge λ_t / mean(diag H̃) chosen by GCV."""

    rows: torch.Tensor
    ridges: list[float]


def drift_target(rows: torch.Tensor, hessians: torch.Tensor, dead: torch.Tensor, stats: LayerStats,
                 ridge: float | None = None) -> DriftTarget:
    """w* for every row of ``rows`` [N, K] (the float weight, float64), group by group: ``hessians``
    [groups, K, K] is H̃ with dead inputs fixed (``cholesky.fix_dead_inputs``; ``dead`` [groups, K]),
    ``stats`` holds C and H. ``ridge``: a fixed relative λ_t instead of the GCV choice."""
    if stats.cross is None or stats.reference_hessian is None:
        raise InputError("input-drift correction needs drift statistics (cross and reference Hessian)")
    per_group = rows.shape[0] // stats.groups
    targets, ridges = [], []
    for g in range(stats.groups):
        weight = rows[g * per_group : (g + 1) * per_group]
        base = weight * ~dead[g]
        gradient = weight @ stats.cross[g].T - base @ hessians[g]  # g per row, [R, K]
        eigenvalues, basis = torch.linalg.eigh(hessians[g])
        eigenvalues = eigenvalues.clamp(min=0)
        scale = float(torch.diagonal(hessians[g]).mean())
        projected = gradient @ basis  # Qᵀg per row
        chosen = ridge if ridge is not None else _gcv_ridge(eigenvalues, projected, scale, stats.count,
                                                            float(drift_objective(weight, base, stats, g, hessians[g]).sum()))
        step = projected / (eigenvalues + chosen * scale)
        targets.append((base + step @ basis.T) * ~dead[g]), ridges.append(chosen)
    return DriftTarget(torch.cat(targets), ridges)


def float_target(rows: torch.Tensor, stats: LayerStats, ridge: float | None = None) -> DriftTarget:
    """``drift_target`` of float ``rows`` [N, K] (float64) with H̃'s dead inputs fixed as the
    reconstruction fixes them (``cholesky.fix_dead_inputs``): W* for a layer left in float (a
    low-rank factorisation's target, the planner's downstream re-fit)."""
    hessians = stats.hessian.to(torch.float64).clone()
    dead = torch.stack([fix_dead_inputs(hessians[g]) for g in range(stats.groups)])
    return drift_target(rows, hessians, dead, stats, ridge)


def drift_error(weight: torch.Tensor, fixed: torch.Tensor, stats: LayerStats) -> float:
    """D(Ŵ) = Σ_t ‖W·x_t − Ŵ·x̃_t‖²/N summed over all rows and groups: ``drift_objective`` of the
    float ``weight`` and ``fixed`` (any shapes whose rows, in order, are [N, K] with the groups'
    rows consecutive, e.g. [N, K] or [groups, N/groups, K])."""
    rows, fixed = weight.reshape(-1, stats.dim), fixed.reshape(-1, stats.dim)
    size = rows.shape[0] // stats.groups
    return float(sum(drift_objective(rows[g * size:(g + 1) * size], fixed[g * size:(g + 1) * size], stats, g).sum()
                     for g in range(stats.groups)))


def _gcv_ridge(eigenvalues: torch.Tensor, projected: torch.Tensor, scale: float, count: int, start: float) -> float:
    """The relative ridge of ``RIDGE_GRID`` minimising GCV(λ) = D(w*_λ)/(1 − df(λ)/N)², summed over
    rows: with Qᵀg per row (``projected``), D(w*_λ) = D(w₀) + Σ_k G_k·(½μ_k/(μ_k + λ)² − 1/(μ_k + λ)),
    G_k = Σ_rows (Qᵀg)_k², df(λ) = Σ_k μ_k/(μ_k + λ); ``start`` is Σ_rows D(w₀)."""
    energy = projected.pow(2).sum(dim=0)
    best, best_score = RIDGE_GRID[-1], float("inf")
    for relative in RIDGE_GRID:
        shifted = eigenvalues + relative * scale
        fit = start + float((energy * (0.5 * eigenvalues / shifted.pow(2) - 1 / shifted)).sum())
        freedom = float((eigenvalues / shifted).sum())
        if freedom < count:
            score = max(fit, 0.0) / (1 - freedom / count) ** 2
            if score < best_score:
                best, best_score = relative, score
    return best


def drift_objective(weight: torch.Tensor, fixed: torch.Tensor, stats: LayerStats, group: int,
                    hessian: torch.Tensor | None = None) -> torch.Tensor:
    """Each row's D(ŵ) = Σ (w·x − ŵ·x̃)²/N = ½ŵH̃ŵᵀ − ŵCwᵀ + ½wHwᵀ for float rows ``weight`` and
    reconstructed rows ``fixed`` [R, K] of conv group ``group`` (``hessian``: H̃ to use, e.g. with
    dead inputs fixed; their weights are 0 in ``fixed``)."""
    hessian = stats.hessian[group] if hessian is None else hessian
    return (row_objective(fixed, hessian) - ((fixed @ stats.cross[group]) * weight).sum(dim=1)
            + row_objective(weight, stats.reference_hessian[group]))
