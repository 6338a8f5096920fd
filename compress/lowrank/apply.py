"""The verb: replace named Conv2d/Linear layers in place by their rank-r factorisations.

``apply_lowrank_(model, settings, stats, output_fisher)``: ``settings`` maps layer names to
``LowRankSettings``; ``stats`` maps them to ``LayerStats`` (``compress/reconstruct/stats.py``,
collected on the uncompressed model; needed by the whitened methods, and used by every method to
measure the output error); ``output_fisher`` maps them to the output Fisher diagonal
(``fisher.output_fisher_diag``; needed by the Fisher methods). Every layer is checked before any is
replaced, so a bad setting leaves the model untouched.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from compress.errors import ConfigError, InputError
from compress.lowrank.factorize import damped, truncated_factors, whitening_factor
from compress.lowrank.modules import LAYER_KINDS, factorised_module, matrix_shape, weight_matrices
from compress.lowrank.records import LowRankRecord, LowRankRecords
from compress.lowrank.settings import FISHER, WHITENED, LowRankSettings
from compress.lowrank.size import factorised_params, layer_params
from compress.progress import progress_bar
from compress.reconstruct.stats import LayerStats

METRICS = {"svd": "weight", "whitened": "output", "fisher": "fisher_weight", "fisher_whitened": "fisher_output"}


def apply_lowrank_(model: nn.Module, settings: Mapping[str, LowRankSettings],
                   stats: Mapping[str, LayerStats] | None = None,
                   output_fisher: Mapping[str, torch.Tensor] | None = None) -> LowRankRecords:
    """In place: every layer named in ``settings`` becomes an ``nn.Sequential`` of two layers."""
    ranks = {name: _checked_rank(model, name, config, stats, output_fisher) for name, config in settings.items()}
    records = {}
    with progress_bar("low-rank", len(settings)) as advance:
        for name, config in settings.items():
            layer_stats = None if stats is None else stats.get(name)
            fisher = None if output_fisher is None else output_fisher.get(name)
            replacement, records[name] = factorise_layer(model.get_submodule(name), config, ranks[name],
                                                         layer_stats, fisher)
            model.set_submodule(name, replacement)
            advance(1, status=name)
    return LowRankRecords(records)


def factorise_layer(layer: nn.Module, config: LowRankSettings, rank: int, stats: LayerStats | None,
                    output_fisher: torch.Tensor | None) -> tuple[nn.Sequential, LowRankRecord]:
    """One layer's factorisation at ``rank`` (per group) and its record; each group of a grouped
    conv is factorised with its own H and its own rows of the Fisher diagonal."""
    m, n, groups = matrix_shape(layer)
    weights = weight_matrices(layer).to(torch.float64)
    row_weights = None if config.method not in FISHER else damped(output_fisher.to(torch.float64), config.damping)
    firsts, seconds, predicted = [], [], 0.0
    for g in range(groups):
        whitening = whitening_factor(stats.hessian[g], config.damping) if config.method in WHITENED else None
        rows = None if row_weights is None else row_weights[g * m:(g + 1) * m]
        factors = truncated_factors(weights[g], rank, whitening, rows)
        firsts.append(factors.first)
        seconds.append(factors.second)
        predicted += factors.predicted_error
    first, second = torch.stack(firsts), torch.stack(seconds)
    bias = layer.bias is not None
    record = LowRankRecord(type(layer).__name__, config, m, n, groups, rank, layer_params(m, n, groups, bias),
                           factorised_params(m, n, rank, groups, bias), predicted, METRICS[config.method],
                           None if stats is None else output_error(weights - second @ first, stats))
    return factorised_module(layer, first, second), record


def output_error(delta: torch.Tensor, stats: LayerStats) -> float:
    """(1/N)·Σ_t ‖ΔW·x_t‖² = ½·Σ_g tr(ΔW_g·H_g·ΔW_gᵀ) for per-group ΔW [groups, m, n]."""
    return float(0.5 * torch.einsum("gmi,gij,gmj->", delta, stats.hessian.to(torch.float64), delta))


def restore_structure_(model: nn.Module, records: LowRankRecords) -> nn.Module:
    """In place: every recorded layer becomes a factorised module of its recorded rank (weights
    zero), so that a factorised model's ``state_dict`` loads into a freshly built model."""
    for name, record in records.layers.items():
        first = torch.zeros(record.groups, record.rank, record.n)
        second = torch.zeros(record.groups, record.m, record.rank)
        model.set_submodule(name, factorised_module(model.get_submodule(name), first, second))
    return model


def _checked_rank(model: nn.Module, name: str, config: LowRankSettings, stats: Mapping[str, LayerStats] | None,
                  output_fisher: Mapping[str, torch.Tensor] | None) -> int:
    """The layer's rank, after checking that the layer exists, is factorisable at that rank and has
    the statistics its method needs."""
    try:
        layer = model.get_submodule(name)
    except AttributeError as exc:
        raise ConfigError(f"low-rank settings name {name!r}, which is not a module of the model") from exc
    if not isinstance(layer, LAYER_KINDS):
        raise ConfigError(f"{name} is a {type(layer).__name__}; only Conv2d and Linear layers can be factorised")
    m, n, groups = matrix_shape(layer)
    if groups > 1 and m == 1:
        raise ConfigError(f"{name}: a depthwise conv with one output per group ({m}×{n} per group) "
                          "cannot be factorised; leave it unfactorised")
    rank = config.rank_for(m, n, name)
    if config.method in WHITENED and (stats is None or name not in stats):
        raise InputError(f"{name}: method {config.method} needs the layer's input statistics (stats)")
    if stats is not None and name in stats and tuple(stats[name].hessian.shape) != (groups, n, n):
        raise InputError(f"{name}: its statistics H have shape {tuple(stats[name].hessian.shape)}, "
                         f"expected {(groups, n, n)}; collect them on this model")
    if config.method in FISHER:
        fisher = None if output_fisher is None else output_fisher.get(name)
        if fisher is None or fisher.shape != (m * groups,) or not bool(fisher.sum() > 0):
            raise InputError(f"{name}: method {config.method} needs the layer's output Fisher diagonal "
                             f"(output_fisher: {m * groups} non-negative values, not all zero)")
    return rank
