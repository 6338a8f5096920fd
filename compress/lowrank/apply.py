"""The verb: replace named Conv2d/Linear layers in place by their rank-r factorisations.

``apply_lowrank_(model, settings, stats, output_fisher, batches)``: ``settings`` maps layer names to
``LowRankSettings``; ``stats`` maps them to ``LayerStats`` (``compress/reconstruct/stats.py``,
collected on the uncompressed model; needed by the whitened methods, and used by every method to
measure the output error); ``output_fisher`` maps them to the output Fisher diagonal
(``fisher.output_fisher_diag``; needed by the Fisher methods). Layers with ``input_drift`` need no
``stats`` but the calibration ``batches``: they are factorised true-sequentially after the others
(``drift.py``), in the order the forward pass reaches them, each from statistics of a copy of the
model in which every layer before it is already factorised, paired with the untouched model's.
Every layer is factorised before any is replaced, so an error (a bad setting, singular statistics)
leaves the model untouched.
"""

from __future__ import annotations

import copy
from typing import Mapping, Sequence

import torch
from torch import nn

from compress.errors import ConfigError, InputError
from compress.lowrank.drift import drift_svds
from compress.lowrank.factorize import WeightedSVD, damped, truncated_factors, weighted_svd, whitening_factor
from compress.lowrank.fisher import uniform_if_unseen
from compress.lowrank.modules import factorised_module, layer_of_shape, matrix_shape, weight_matrices
from compress.lowrank.records import LowRankRecord, LowRankRecords
from compress.lowrank.settings import FISHER, METRICS, WHITENED, LowRankSettings
from compress.lowrank.size import factorised_params, layer_params
from compress.progress import progress_bar
from compress.reconstruct.drift import drift_error
from compress.reconstruct.sequential import Forward, execution_steps, step_stats
from compress.reconstruct.stats import LayerStats, run_forward


def apply_lowrank_(model: nn.Module, settings: Mapping[str, LowRankSettings],
                   stats: Mapping[str, LayerStats] | None = None,
                   output_fisher: Mapping[str, torch.Tensor] | None = None,
                   batches: Sequence[object] | None = None, forward: Forward = run_forward) -> LowRankRecords:
    """In place: every layer named in ``settings`` becomes an ``nn.Sequential`` of two layers
    (``batches``, each passed to ``forward``: the calibration data of the ``input_drift`` layers)."""
    ranks = {name: _checked_rank(model, name, config, stats, output_fisher, batches) for name, config in settings.items()}
    replacements, records = {}, {}
    with progress_bar("low-rank", len(settings)) as advance:
        for name, config in settings.items():
            if config.input_drift:
                continue
            layer_stats = None if stats is None else stats.get(name)
            fisher = None if output_fisher is None else output_fisher.get(name)
            replacements[name], records[name] = factorise_layer(model.get_submodule(name), config, ranks[name],
                                                                layer_stats, fisher, name)
            advance(1, status=name)
        drifting = {name: config for name, config in settings.items() if config.input_drift}
        if drifting:
            _factorise_sequentially(model, drifting, ranks, replacements, records, output_fisher, batches, forward,
                                    advance)
    for name in settings:  # only once every layer has succeeded
        model.set_submodule(name, replacements[name])
    return LowRankRecords({name: records[name] for name in settings})


def _factorise_sequentially(model: nn.Module, settings: Mapping[str, LowRankSettings], ranks: dict[str, int],
                            replacements: dict, records: dict, output_fisher: Mapping[str, torch.Tensor] | None,
                            batches: Sequence[object], forward: Forward, advance) -> None:
    """The ``input_drift`` layers, in forward order, each from drift statistics of a copy of
    ``model`` holding every replacement made so far, paired with ``model`` itself (left untouched);
    adds to ``replacements`` and ``records``."""
    working = copy.deepcopy(model)
    for name, replacement in replacements.items():
        working.set_submodule(name, replacement)
    for step in execution_steps(model, list(settings), batches[0], forward):
        collected = step_stats(working, step, batches, forward, model, set(step))
        for name in step:
            fisher = None if output_fisher is None else output_fisher.get(name)
            replacements[name], records[name] = factorise_layer(working.get_submodule(name), settings[name],
                                                                ranks[name], collected[name], fisher, name)
            working.set_submodule(name, replacements[name])
            advance(1, status=name)


def factorise_layer(layer: nn.Module, config: LowRankSettings, rank: int, stats: LayerStats | None,
                    output_fisher: torch.Tensor | None, name: str = "layer") -> tuple[nn.Sequential, LowRankRecord]:
    """One layer's factorisation at ``rank`` (per group) and its record."""
    m, n, groups = matrix_shape(layer)
    factors = [truncated_factors(svd, rank) for svd in group_svds(layer, config.method, config.damping, stats,
                                                                   output_fisher, name, config.input_drift,
                                                                   config.drift_ridge)]
    first = torch.stack([f.first for f in factors])
    second = torch.stack([f.second for f in factors])
    bias = layer.bias is not None
    weights = weight_matrices(layer).to(torch.float64)
    measured = (None if stats is None else drift_error(weights, second @ first, stats) if config.input_drift
                else output_error(weights - second @ first, stats))
    record = LowRankRecord(type(layer).__name__, config, m, n, groups, rank, layer_params(m, n, groups, bias),
                           factorised_params(m, n, rank, groups, bias), sum(f.predicted_error for f in factors),
                           METRICS[config.method], measured)
    return factorised_module(layer, first, second), record


def group_svds(layer: nn.Module, method: str, damping: float, stats: LayerStats | None,
               output_fisher: torch.Tensor | None, name: str = "layer", input_drift: bool = False,
               drift_ridge: float | None = None) -> list[WeightedSVD]:
    """The weighted SVD of each group's m×n matrix for ``method``: each group of a grouped conv is
    whitened with its own H and weighted by its own rows of the Fisher diagonal (uniformly where the
    diagonal is all zero, ``fisher.uniform_if_unseen``); with ``input_drift``, of the drift target
    in the metric of the drifted inputs (``drift.drift_svds``; ``stats`` are drift statistics;
    ``drift_ridge``: its fixed relative ridge, None for the GCV choice)."""
    m, _, groups = matrix_shape(layer)
    weights = weight_matrices(layer).to(torch.float64)
    row_weights = damped(uniform_if_unseen(output_fisher), damping) if method in FISHER else None
    if input_drift:
        return drift_svds(weights, stats, damping, row_weights, name, drift_ridge)
    return [weighted_svd(weights[g],
                         whitening_factor(stats.hessian[g], damping, name) if method in WHITENED else None,
                         None if row_weights is None else row_weights[g * m:(g + 1) * m])
            for g in range(groups)]


def predicted_errors(layer: nn.Module, method: str, stats: LayerStats | None = None,
                     output_fisher: torch.Tensor | None = None, damping: float = 0.01) -> list[float]:
    """The predicted error (as in ``LowRankRecord.predicted_error``) of every rank r = 0 … min(m, n)
    of ``layer``, index r, from one SVD per group: the planner's error curve. Only ranks
    1 … ``max_useful_rank(m, n)`` save parameters."""
    return torch.stack([svd.errors() for svd in group_svds(layer, method, damping, stats, output_fisher)]
                       ).sum(dim=0).tolist()


def output_error(delta: torch.Tensor, stats: LayerStats) -> float:
    """(1/N)·Σ_t ‖ΔW·x_t‖² = ½·Σ_g tr(ΔW_g·H_g·ΔW_gᵀ) for per-group ΔW [groups, m, n]."""
    return float(0.5 * torch.einsum("gmi,gij,gmj->", delta, stats.hessian.to(torch.float64), delta))


def restore_structure_(model: nn.Module, records: LowRankRecords) -> nn.Module:
    """In place: every recorded layer becomes a factorised module of its recorded rank (weights
    zero), so that a factorised model's ``state_dict`` loads into a freshly built model. The factors
    take the recorded m×n shape, so a layer that was channel-pruned before it was factorised is
    restored at its pruned width."""
    for name, record in records.layers.items():
        first = torch.zeros(record.groups, record.rank, record.n)
        second = torch.zeros(record.groups, record.m, record.rank)
        layer = layer_of_shape(model.get_submodule(name), record.m, record.n, record.groups)
        model.set_submodule(name, factorised_module(layer, first, second))
    return model


def layer_rank(layer: nn.Module, config: LowRankSettings, name: str = "layer") -> int:
    """The rank ``config`` gives ``layer`` (per group), after checking that the layer can be
    factorised into fewer parameters at that rank (one-line ``ConfigError`` naming the limit)."""
    m, n, groups = matrix_shape(layer, name)
    if groups > 1 and m == 1:
        raise ConfigError(f"{name}: a depthwise conv with one output per group ({m}×{n} per group) "
                          "cannot be factorised; leave it unfactorised")
    return config.rank_for(m, n, name)


def _checked_rank(model: nn.Module, name: str, config: LowRankSettings, stats: Mapping[str, LayerStats] | None,
                  output_fisher: Mapping[str, torch.Tensor] | None, batches: Sequence[object] | None) -> int:
    """The layer's rank, after checking that the layer exists, is factorisable at that rank and has
    the statistics (or, with input_drift, the calibration batches) its method needs."""
    try:
        layer = model.get_submodule(name)
    except AttributeError as exc:
        raise ConfigError(f"low-rank settings name {name!r}, which is not a module of the model") from exc
    rank = layer_rank(layer, config, name)
    m, n, groups = matrix_shape(layer, name)
    if config.input_drift and not batches:
        raise InputError(f"{name}: input_drift needs the calibration data (batches) to factorise true-sequentially")
    if config.method in WHITENED and not config.input_drift and (stats is None or name not in stats):
        raise InputError(f"{name}: method {config.method} needs the layer's input statistics (stats)")
    if not config.input_drift and stats is not None and name in stats and tuple(stats[name].hessian.shape) != (groups, n, n):
        raise InputError(f"{name}: its statistics H have shape {tuple(stats[name].hessian.shape)}, "
                         f"expected {(groups, n, n)}; collect them on this model")
    if config.method in FISHER:
        fisher = None if output_fisher is None else output_fisher.get(name)
        if fisher is None or fisher.shape != (m * groups,) or bool((fisher < 0).any()):
            raise InputError(f"{name}: method {config.method} needs the layer's output Fisher diagonal "
                             f"(output_fisher: {m * groups} non-negative values)")
    return rank
