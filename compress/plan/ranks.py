"""Rank options in the plan: which ranks a layer is offered, the weight a rank option deploys, its
layer error, its stored bits.

Offered ranks (``PlanSpec.ranks``, rank ratios ρ, off by default): for a layer of ``groups``
matrices m×n (``compress.lowrank.modules``) each ρ gives r = ⌊ρ·m·n/(m + n)⌋ per group
(``lowrank.size.rank_from_ratio``: factors holding about ρ of the layer's weights), kept where
apply accepts it (1 ≤ r ≤ max_useful_rank, r < min(m, n)); each rank goes with every weight bit
width of the spec, activations float (``LayerOption``: no masks, no activation bits on factors).

Deployed weight: apply factorises the layer by whitened truncated SVD (SVD-LLM, Wang et al. 2024,
arXiv 2403.07378; ``RANK_METHOD`` at apply's default damping) from the calibration statistics, then
rounds each factor to nearest per output channel (the plan recipe writes ``method: rtn`` for it):
W' = Q_b(second)·Q_b(first), per group. The planner evaluates exactly that product.

Layer error: E = ½·tr(ΔW·H·ΔWᵀ) = (1/N)·Σ_t‖ΔW·x_t‖² for ΔW = W' − W on the undamped statistics,
mapped to loss units as reconstructed options are (``reconstructed.omega_from_error``). For float
factors E is the discarded tail ½·Σ_{i>r} σ_i² of ``lowrank.apply.predicted_errors`` less its damping
term ½·δ·mean(diag H)·‖ΔW‖² (``factorize.py``); computing E from ΔW keeps that term out and covers the
quantized factors too. The first-order Ω of a rank option is the trace model ½·(Tr/n)·‖ΔW‖².

Stored bits: ``factorised_params(m, n, r, groups)`` weights at b bits (32 when float), plus one fp32
scale per row of each factor, groups·(r + m), when quantized; the bias and BatchNorm are charged as
for the whole layer (``size.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from compress.errors import InputError
from compress.lowrank.apply import group_svds
from compress.lowrank.factorize import WeightedSVD, truncated_factors
from compress.lowrank.modules import matrix_shape
from compress.lowrank.settings import LowRankSettings
from compress.lowrank.size import factorised_params, max_useful_rank, rank_from_ratio
from compress.plan.costs import SCALE_BITS
from compress.quant.weights import fake_quantize_per_channel
from compress.reconstruct.price import layer_objective
from compress.reconstruct.stats import LayerStats
from compress.vocab.layers import is_compressible
from compress.vocab.options import LayerOption

RANK_METHOD = "whitened"
RANK_DAMPING = LowRankSettings(rank=1).damping  # apply's default


def offered_ranks(layer: nn.Module, ratios: tuple[float, ...]) -> list[int]:
    """The distinct ranks (per group) the ratios give ``layer`` that apply accepts, ascending."""
    if not ratios or not is_compressible(layer):
        return []
    m, n, groups = matrix_shape(layer)
    if groups > 1 and m == 1:  # depthwise: one output per group, nothing to factorise
        return []
    ranks = {rank_from_ratio(m, n, ratio) for ratio in ratios}
    return sorted(r for r in ranks if 1 <= r <= max_useful_rank(m, n) and r < min(m, n))


def rank_options(layer: nn.Module, ratios: tuple[float, ...], bits: tuple[int | None, ...]) -> list[LayerOption]:
    """Every offered rank × weight bit width (float activations)."""
    return [LayerOption(b, rank=r) for r in offered_ranks(layer, ratios) for b in bits]


def factorised_weight_count(layer: nn.Module, rank: int) -> int:
    """Weights of the rank-``rank`` factors of ``layer`` (bias excluded)."""
    m, n, groups = matrix_shape(layer)
    return factorised_params(m, n, rank, groups)


def factor_scale_bits(layer: nn.Module, option: LayerOption) -> int:
    """The per-row scales of the first (reducing) factor, groups·r of them when quantized: the
    second factor's m per group are the layer's own output channels, counted as the whole layer's
    scales are (``costs.storage_bits``)."""
    if option.rank is None or option.bits is None:
        return 0
    return matrix_shape(layer)[2] * option.rank * SCALE_BITS


def factorised_weight(svds: list[WeightedSVD], rank: int, bits: int | None, shape: torch.Size) -> torch.Tensor:
    """W' = Q_b(second)·Q_b(first) per group (float64), in the layer's weight ``shape``."""
    products = []
    for svd in svds:
        factors = truncated_factors(svd, rank)
        products.append(fake_quantize_per_channel(factors.second, bits) @ fake_quantize_per_channel(factors.first, bits))
    return torch.cat(products).reshape(shape)


@dataclass
class FactorisedOptions:
    """Deployed weights and layer errors E of rank options, cached per (layer, option); one whitened
    SVD per layer (``stats(name)``: the layer's calibration statistics on the uncompressed model)."""

    model: nn.Module
    stats: Callable[[str], LayerStats]
    svds: dict[str, list[WeightedSVD]] = field(default_factory=dict)
    results: dict[tuple[str, LayerOption], tuple[torch.Tensor, float]] = field(default_factory=dict)

    def weight(self, name: str, option: LayerOption) -> torch.Tensor:
        """W' as apply deploys it (the layer's dtype and weight shape)."""
        return self._result(name, option)[0]

    def error(self, name: str, option: LayerOption) -> float:
        """E = ½·tr(ΔW·H·ΔWᵀ), ΔW = W' − W, on the undamped statistics."""
        return self._result(name, option)[1]

    def _result(self, name: str, option: LayerOption) -> tuple[torch.Tensor, float]:
        key = (name, option)
        if key not in self.results:
            layer = self.model.get_submodule(name)
            stats = self.stats(name)
            if name not in self.svds:
                self.svds[name] = group_svds(layer, RANK_METHOD, RANK_DAMPING, stats, None, name)
            weight = factorised_weight(self.svds[name], option.rank, option.bits, layer.weight.shape)
            original = layer.weight.detach().double()
            self.results[key] = (weight.to(layer.weight.dtype), layer_objective(weight - original, stats))
        return self.results[key]


def first_order_omega(layer: nn.Module, weight: torch.Tensor, trace: float, num_params: int) -> float:
    """The trace model ½·(Tr/n)·‖W' − W‖² of a deployed weight W'."""
    delta = weight.double() - layer.weight.detach().double()
    return 0.5 * trace / num_params * float(delta.pow(2).sum())


def require_rank_evidence(has_rank_options: bool, reconstruction: object | None, latency: object | None) -> None:
    """Rank options are priced from the layers' input statistics and are not in latency tables."""
    if not has_rank_options:
        return
    if reconstruction is None:
        raise InputError("rank options need the layers' input statistics (evidence.reconstruction, "
                         "a compress.plan.reconstructed.Reconstructions)")
    if latency is not None:
        raise InputError("rank options are not timed by the latency table; plan ranks without a latency "
                         "table (no backend), or without ranks")
