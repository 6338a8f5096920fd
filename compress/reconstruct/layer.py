"""One layer's second-order reconstruction: GPTQ quantization, SparseGPT/Wanda/magnitude pruning, or
both in one sweep, from the layer's input statistics (``stats.LayerStats``).

Objective (per output row r, per group of a grouped conv): e_r = ½·Δw_r·(H + λI)·Δw_rᵀ with
H = 2·XᵀX/N, i.e. ‖Δw_r·Xᵀ‖²/N (the mean squared output error of that row) up to the damping term.
``LayerReconstruction.row_error`` holds e_r as predicted by the sweep (Σ (w − q)²/U_ii²/2; exact for
the damped objective), and ``predicted_error`` = Σ_r ρ_r·e_r with the loss-aware row weights ρ
(ρ ≡ 1 when plain): the number the planner maps to loss units. With ``input_drift`` and drift
statistics, the sweep runs on the drift target w* instead of w and e_r is the drift objective
D_r(ŵ) = Σ (w·x − ŵ·x̃)²/N against the float model's inputs x, evaluated exactly from the
statistics (``drift.py``).

Sequence per group: dead inputs (H_jj = 0) zeroed; scales fixed on the original weight; columns
optionally reordered by descending H_jj (act-order; not for 2:4, whose groups follow the original
order); U = chol((H + λI)⁻¹) with λ raised on failure; the sweep; columns put back in order; when
only pruning, the kept weights re-fitted by least squares (``refit.py``); when quantizing, the scales
re-fitted by least squares for the codes the sweep chose (``rescale.py``, ``refit_scales``) and,
with ``second_sweep`` and no pruning, a second sweep on those re-fitted scales, itself re-fitted,
each row keeping the pass with the smaller objective (one more round of alternating code and scale
fitting; the first pass is a candidate, so no row's objective rises). Off by default: measured,
weights only, it moved all-MiniLM-L6-v2 (4 bits, blocks of 32)
only from 0.9894 to 0.9898 mean cosine, and cost mnist-cnn 0.1–0.4 points in all four bit mixes
of ``benchmarks/reconstruct.py``, for twice the sweep time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from compress.errors import ConfigError, InputError
from compress.prune.masks import pruning_mask
from compress.reconstruct.cholesky import fix_dead_inputs, inverse_factor
from compress.reconstruct.drift import drift_objective, drift_target
from compress.reconstruct.gptq import asymmetric_grid, codes, column_scales, grid_scales, round_to_grid
from compress.reconstruct.sparsegpt import FixedSelector, NMSelector, UnstructuredSelector, wanda_keep
from compress.reconstruct.stats import LayerStats
from compress.reconstruct.refit import refit_kept, row_objective
from compress.reconstruct.rescale import refit_scales
from compress.reconstruct.sweep import SweepResult, obs_sweep

PRUNE_METHODS = ("magnitude", "wanda", "sparsegpt")
PRUNE_PATTERNS = ("unstructured", "2:4")
MASK_GROUP = 16  # columns per unstructured mask choice: re-chosen often, on compensated weights


@dataclass(frozen=True)
class ReconstructSettings:
    """What to do to one layer. ``bits`` (2..8) / ``weight_block``: the quantization grid (None: keep
    float values); ``ratio``/``pattern``/``prune_method``: pruning (ratio 0: none); ``damp``: λ as a
    fraction of mean(diag H); ``block_size``: columns per lazy update; ``act_order``: sweep columns by
    descending H_jj; ``refit_scales``: re-fit the scales by least squares once the codes are fixed;
    ``second_sweep``: with ``refit_scales`` and no pruning, sweep again on the re-fitted scales;
    ``symmetric`` False: asymmetric blocks with zero points (needs ``weight_block``); ``input_drift``
    (default): reconstruct toward the float model's output on the float model's inputs
    (``drift.py``; the true-sequential driver collects the drift statistics; without them, e.g. in
    one pass, it is plain GPTQ); ``row_weights`` are passed separately (loss-aware)."""

    bits: int | None = None
    weight_block: int | None = None
    ratio: float = 0.0
    pattern: str = "unstructured"
    prune_method: str = "sparsegpt"
    damp: float = 0.01
    block_size: int = 128
    act_order: bool = True
    refit_scales: bool = True
    second_sweep: bool = False
    symmetric: bool = True
    input_drift: bool = True

    def __post_init__(self) -> None:
        if self.bits is not None and not 2 <= self.bits <= 8:
            raise ConfigError(f"bits {self.bits} is not allowed (allowed: 2..8 or None)")
        if self.pattern not in PRUNE_PATTERNS:
            raise ConfigError(f"pattern {self.pattern!r} cannot be reconstructed (allowed: {', '.join(PRUNE_PATTERNS)})")
        if self.prune_method not in PRUNE_METHODS:
            raise ConfigError(f"pruning method {self.prune_method!r} cannot be reconstructed (allowed: {', '.join(PRUNE_METHODS)})")
        if self.damp < 0 or self.block_size < 1:
            raise ConfigError(f"damp {self.damp} and block_size {self.block_size} are not allowed (allowed: damp >= 0, block_size >= 1)")
        if not self.symmetric and (self.bits is None or self.weight_block is None):
            raise ConfigError("asymmetric weights (symmetric false) need bits and weight_block (zero points are per block)")

    @property
    def prunes(self) -> bool:
        return self.ratio > 0 or self.pattern == "2:4"


@dataclass(frozen=True)
class LayerReconstruction:
    """The result for one layer: ``weight`` (original shape and dtype, on the grid and masked),
    ``scales`` ([N] per channel or [N, K/B]; None without quantization), ``zero_points`` ([N, K/B]
    integer-valued, asymmetric blocks only; else None), ``keep`` (bool, weight-shaped;
    None without pruning), the relative ``damp`` used (largest over groups) and how many times it was
    raised, each row's predicted error e_r and the (row-weighted) ``predicted_error``."""

    weight: torch.Tensor
    scales: torch.Tensor | None
    keep: torch.Tensor | None
    damp: float
    damp_raises: int
    row_error: torch.Tensor
    predicted_error: float
    zero_points: torch.Tensor | None = None
    drift_ridge: float | None = None

    def codes(self, bits: int) -> torch.Tensor:
        """The integer codes the exporter writes (weight reshaped to [N, K])."""
        rows = self.weight.reshape(self.weight.shape[0], -1).double()
        zero_points = None if self.zero_points is None else self.zero_points.double()
        return codes(rows, self.scales.double(), bits, zero_points)


def reconstruct_layer(weight: torch.Tensor, stats: LayerStats, settings: ReconstructSettings,
                      row_weights: torch.Tensor | None = None, factors: dict | None = None) -> LayerReconstruction:
    """Reconstruct ``weight`` (Linear [N, K] or Conv2d [N, C/g, kh, kw]) against ``stats``.
    ``factors``: a cache of inverse-Hessian factors for these ``stats`` (per group, column order and
    damp), so several options of one layer factorise H once (the planner prices 4 bit widths)."""
    rows = weight.detach().reshape(weight.shape[0], -1).to(torch.float64)
    groups, per_group = stats.groups, rows.shape[0] // stats.groups
    if rows.shape[1] != stats.dim or rows.shape[0] % groups:
        raise InputError(f"weight {tuple(weight.shape)} does not match statistics of {groups} group(s) of {stats.dim} inputs")
    hessians = stats.hessian.clone()
    dead = torch.stack([fix_dead_inputs(hessians[g]) for g in range(groups)])  # [groups, K]
    drift = drift_target(rows, hessians, dead, stats) if settings.input_drift and stats.cross is not None else None
    original, rows = rows, rows * ~dead.repeat_interleave(per_group, dim=0) if drift is None else drift.rows
    energy = torch.diagonal(hessians, dim1=1, dim2=2).repeat_interleave(per_group, dim=0)  # H_jj per row, [N, K]
    scales, zero_points = _grid(rows, settings, energy)
    block_scales = None if scales is None else scales.reshape(rows.shape[0], -1).clone()  # [N, G]
    weights = torch.ones(rows.shape[0], dtype=torch.float64) if row_weights is None else row_weights.double()
    select = _selector(settings, rows, stats)
    fixed, keeps, errors, damp, raises = [], [], [], 0.0, 0
    for g in range(groups):
        part = slice(g * per_group, (g + 1) * per_group)
        part_scales = None if scales is None else column_scales(scales, rows.shape[1])[part]
        part_zeros = None if zero_points is None else column_scales(zero_points, rows.shape[1])[part]
        if isinstance(select, UnstructuredSelector):
            select.row_weights = None if row_weights is None else weights[part]
        group_select = FixedSelector(select.keep[part]) if isinstance(select, FixedSelector) else select
        result, factor = _sweep_group(rows[part], hessians[g], part_scales, part_zeros, group_select, settings,
                                      None if factors is None else factors.setdefault(g, {}))
        if scales is not None and settings.refit_scales:
            result, block_scales[part] = _rescaled(rows[part], result, hessians[g], factor.damp, block_scales[part])
            if settings.second_sweep and select is None:
                result, block_scales[part] = _swept_again(rows[part], hessians[g], result, block_scales[part], part_zeros, settings)
        error = result.row_error if drift is None else drift_objective(original[part], result.weight, stats, g, hessians[g])
        fixed.append(result.weight), errors.append(error), keeps.append(result.keep)
        damp, raises = max(damp, factor.damp), max(raises, factor.raises)
    row_error = torch.cat(errors)
    keep = None if select is None else torch.cat(keeps).reshape(weight.shape)
    return LayerReconstruction(
        weight=torch.cat(fixed).reshape(weight.shape).to(weight.dtype),
        scales=None if scales is None else block_scales.reshape(scales.shape).to(weight.dtype),
        keep=keep, damp=damp, damp_raises=raises, row_error=row_error,
        predicted_error=float((weights * row_error).sum()),
        zero_points=None if zero_points is None else zero_points.to(weight.dtype),
        drift_ridge=None if drift is None else max(drift.ridges),
    )  # fmt: skip


def _grid(rows: torch.Tensor, settings: ReconstructSettings, energy: torch.Tensor):
    """(scales, zero points) fixed before the sweep; (None, None) without quantization, zero points
    None on a symmetric grid."""
    if settings.bits is None:
        return None, None
    if settings.symmetric:
        return grid_scales(rows, settings.bits, settings.weight_block, energy), None
    return asymmetric_grid(rows, settings.bits, settings.weight_block, energy)


def _selector(settings: ReconstructSettings, rows: torch.Tensor, stats: LayerStats):
    """The pruning rule of the sweep (None without pruning); Wanda and magnitude masks are chosen
    up front from the original weights and then held fixed."""
    if not settings.prunes:
        return None
    if settings.pattern == "2:4" and rows.shape[1] % 4:
        raise InputError(f"2:4 needs a reduction size divisible by 4, got {rows.shape[1]}")
    if settings.prune_method == "sparsegpt":
        return NMSelector(2, 4) if settings.pattern == "2:4" else UnstructuredSelector(settings.ratio, MASK_GROUP)
    per_group = rows.shape[0] // stats.groups
    diagonal = torch.diagonal(stats.hessian, dim1=1, dim2=2).repeat_interleave(per_group, dim=0)  # [N, K]
    if settings.prune_method == "wanda":
        keep = wanda_keep(rows, diagonal, settings.ratio, settings.pattern)
    else:
        keep = pruning_mask(rows, settings.ratio, settings.pattern)
    return FixedSelector(keep)


def _sweep_group(rows: torch.Tensor, hessian: torch.Tensor, scales: torch.Tensor | None, zero_points: torch.Tensor | None,
                 select, settings: ReconstructSettings, factors: dict | None = None):
    """The sweep of one group's rows (``scales``/``zero_points`` per weight, [R, K]), with act-order
    applied and undone; the factor taken from / added to ``factors`` (keyed by order and damp)."""
    order = torch.arange(rows.shape[1])
    permuted = settings.act_order and settings.pattern != "2:4"
    if permuted:
        order = torch.argsort(torch.diagonal(hessian), descending=True, stable=True)
    key = (permuted, settings.damp)
    factor = (factors or {}).get(key) or inverse_factor(hessian[order][:, order], settings.damp)
    if factors is not None:
        factors[key] = factor
    permuted_scales = None if scales is None else scales[:, order]
    permuted_zeros = None if zero_points is None else zero_points[:, order]

    def target(column: int, values: torch.Tensor) -> torch.Tensor:
        if permuted_scales is None:
            return values
        zeros = None if permuted_zeros is None else permuted_zeros[:, column]
        return round_to_grid(values, permuted_scales[:, column], settings.bits, zeros)

    if isinstance(select, FixedSelector):
        select = FixedSelector(select.keep[:, order])
    result = obs_sweep(rows[:, order], factor.upper, target, select, settings.block_size)
    inverse = torch.argsort(order)
    keep = None if result.keep is None else result.keep[:, inverse]
    fixed, row_error = result.weight[:, inverse], result.row_error
    if keep is not None and scales is None:  # pruning only: the kept weights are free to re-fit
        damped = _damped(hessian, factor.damp)
        fixed = refit_kept(rows, damped, keep)
        row_error = row_objective(fixed - rows, damped)
    return SweepResult(fixed, keep, row_error), factor


def _rescaled(rows: torch.Tensor, result: SweepResult, hessian: torch.Tensor, damp: float,
              scales: torch.Tensor) -> tuple[SweepResult, torch.Tensor]:
    """The sweep's result with each row's block ``scales`` [R, G] re-fitted for its codes (on an
    asymmetric grid: q − z, the zero points staying), and the new scales; the row errors recomputed
    exactly on the damped objective."""
    width = rows.shape[1] // scales.shape[1]
    codes = torch.round(result.weight / scales.repeat_interleave(width, dim=1))  # q − z
    damped = _damped(hessian, damp)
    fitted = refit_scales(rows, codes, scales, damped)
    weight = codes * fitted.repeat_interleave(width, dim=1)
    return SweepResult(weight, result.keep, row_objective(weight - rows, damped)), fitted


def _swept_again(rows: torch.Tensor, hessian: torch.Tensor, first: SweepResult, scales: torch.Tensor,
                 zero_points: torch.Tensor | None, settings: ReconstructSettings) -> tuple[SweepResult, torch.Tensor]:
    """The sweep and re-fit once more, starting from the re-fitted block ``scales`` [R, G] of
    ``first``; per row the pass with the smaller (damped) objective, and its scales."""
    again, factor = _sweep_group(rows, hessian, column_scales(scales, rows.shape[1]), zero_points, None, settings)
    again, fitted = _rescaled(rows, again, hessian, factor.damp, scales)
    better = again.row_error < first.row_error
    return (SweepResult(torch.where(better[:, None], again.weight, first.weight), None,
                        torch.where(better, again.row_error, first.row_error)),
            torch.where(better[:, None], fitted, scales))


def _damped(hessian: torch.Tensor, damp: float) -> torch.Tensor:
    """H + λI with λ = damp · mean(diag H)."""
    return hessian + damp * torch.diagonal(hessian).mean() * torch.eye(hessian.shape[0], dtype=hessian.dtype)
