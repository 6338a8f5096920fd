"""Rank options in the plan: which ranks a layer is offered, the weight a rank option deploys, its
layer error, its stored bits.

Offered ranks (``PlanSpec.ranks``, rank ratios ρ, off by default): for a layer of ``groups``
matrices m×n (``compress.lowrank.modules``) each ρ gives r = ⌊ρ·m·n/(m + n)⌋ per group
(``lowrank.size.rank_from_ratio``: factors holding about ρ of the layer's weights), kept where
apply accepts it (1 ≤ r ≤ max_useful_rank, r < min(m, n)); each rank goes with every weight bit
width of the spec, activations float (``LayerOption``: no masks, no activation bits on factors).

Deployed weight: apply factorises the layer by the Fisher-weighted whitened truncated SVD
(``RANK_METHOD``: SVD-LLM's whitening, Wang et al. 2024, arXiv 2403.07378, with FWSVD's output rows
weighted by the output Fisher diagonal d, Hsu et al. 2022, arXiv 2207.00112; apply's default
damping) from the calibration statistics, then rounds each factor to nearest per output channel
(the plan recipe writes ``method: rtn`` for it): W' = Q_b(second)·Q_b(first), per group. The planner
evaluates exactly that product, from the same d apply computes (``lowrank.fisher.output_fisher_diag``
over the same calibration batches).

Layer error: the output error weighted by the output-side curvature,
E_ρ = ½·Σ_i ρ_i·Δw_i·H·Δw_iᵀ = (1/N)·Σ_t Σ_i ρ_i·(Δw_i·x_t)² for ΔW = W' − W on the undamped statistics,
with ρ = d / mean(d) (all ones where no gradient reaches the layer). Mapped to loss units as
reconstructed options are, Ω = (Tr(H_L)/n)·E_ρ/h̄ (``reconstructed.omega_from_error``), this is the
K-FAC quadratic with a diagonal output factor: for a weight Hessian G ⊗ A with G = diag(d), A = H/2,
ΔL ≈ ½·Σ_i d_i·Δw_i·A·Δw_iᵀ = ½·mean(d)·E_ρ, and Tr(G ⊗ A) = m·mean(d)·Tr(A) = Tr(H_L) gives
mean(d) = 2·(Tr(H_L)/n)/h̄ — the trace sets the scale, d only moves the weight between output rows
(ρ ≡ 1: the isotropic mapping of the other options). For float factors E_ρ is the discarded tail of
the weighted SVD less its damping terms (``factorize.py``); computing E_ρ from ΔW keeps them out and
covers the quantized factors too. The first-order Ω of a rank option is the trace model
½·(Tr/n)·‖ΔW‖².

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
from compress.lowrank.fisher import output_fisher_diag, uniform_if_unseen
from compress.lowrank.modules import matrix_shape
from compress.lowrank.settings import LowRankSettings
from compress.lowrank.size import factorised_params, max_useful_rank, rank_from_ratio
from compress.plan.costs import SCALE_BITS
from compress.quant.weights import fake_quantize_per_channel
from compress.reconstruct.price import layer_objective
from compress.reconstruct.stats import LayerStats
from compress.vocab.layers import compressible_layers, is_compressible
from compress.vocab.options import LayerOption

RANK_METHOD = "fisher_whitened"
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


def row_weights(fisher: torch.Tensor) -> torch.Tensor:
    """ρ = d / mean(d) (float64); all ones where d is all zero (``fisher.uniform_if_unseen``)."""
    fisher = uniform_if_unseen(fisher)
    return fisher / fisher.mean()


@dataclass
class FactorisedOptions:
    """Deployed weights and Fisher-weighted layer errors E_ρ of rank options, cached per (layer,
    option); one weighted SVD per layer (``stats(name)``: the layer's calibration statistics on the
    uncompressed model; ``inputs``: the calibration batches' inputs, for the output Fisher diagonal of
    every compressible layer, one backward pass per batch, taken on first use)."""

    model: nn.Module
    stats: Callable[[str], LayerStats]
    inputs: list
    fisher: dict[str, torch.Tensor] = field(default_factory=dict)
    svds: dict[str, list[WeightedSVD]] = field(default_factory=dict)
    results: dict[tuple[str, LayerOption], tuple[torch.Tensor, float]] = field(default_factory=dict)

    def weight(self, name: str, option: LayerOption) -> torch.Tensor:
        """W' as apply deploys it (the layer's dtype and weight shape)."""
        return self._result(name, option)[0]

    def error(self, name: str, option: LayerOption) -> float:
        """E_ρ = ½·Σ_i ρ_i·Δw_i·H·Δw_iᵀ, ΔW = W' − W, on the undamped statistics."""
        return self._result(name, option)[1]

    def output_fisher(self, name: str) -> torch.Tensor:
        """The layer's output Fisher diagonal d, as apply computes it."""
        if not self.fisher:
            self.fisher.update(output_fisher_diag(self.model, self.inputs, list(compressible_layers(self.model))))
        return self.fisher[name]

    def _result(self, name: str, option: LayerOption) -> tuple[torch.Tensor, float]:
        key = (name, option)
        if key not in self.results:
            layer = self.model.get_submodule(name)
            stats = self.stats(name)
            fisher = self.output_fisher(name)
            if name not in self.svds:
                self.svds[name] = group_svds(layer, RANK_METHOD, RANK_DAMPING, stats, fisher, name)
            weight = factorised_weight(self.svds[name], option.rank, option.bits, layer.weight.shape)
            original = layer.weight.detach().double()
            error = layer_objective(weight - original, stats, row_weights(fisher))
            self.results[key] = (weight.to(layer.weight.dtype), error)
        return self.results[key]


def first_order_omega(layer: nn.Module, weight: torch.Tensor, trace: float, num_params: int) -> float:
    """The trace model ½·(Tr/n)·‖W' − W‖² of a deployed weight W'."""
    delta = weight.double() - layer.weight.detach().double()
    return 0.5 * trace / num_params * float(delta.pow(2).sum())


def require_rank_evidence(has_rank_options: bool, reconstruction: object | None) -> None:
    """Rank options are priced from the layers' input statistics."""
    if has_rank_options and reconstruction is None:
        raise InputError("rank options need the layers' input statistics (evidence.reconstruction, "
                         "a compress.plan.reconstructed.Reconstructions)")
