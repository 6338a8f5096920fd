"""What apply deploys for one (layer, option), priced for the planner: the second-order reconstruction.

``apply`` reconstructs every layer it quantizes with ``method: gptq`` (the default) — and a mask
chosen with it — by GPTQ/SparseGPT (``compress.reconstruct``); the planner must price that weight,
not round-to-nearest. For an option o, the reconstruction gives Ŵ_o and its layer objective

    E(o) = ½·Σ_r Δw_r·H·Δw_rᵀ = ‖(Ŵ_o − W)·Xᵀ‖²/N,   H = 2·XᵀX/N (the layer's input statistics).

Mapping E to loss units (K-FAC, Martens & Grosse 2015): the loss Hessian of the layer's weight is
≈ G ⊗ A with A = E[x xᵀ] = H/2 and G the output-gradient factor. With G ≈ g·I (the output side
isotropic, as the trace model assumes for the whole block), ΔL ≈ ½·g·tr(ΔW·A·ΔWᵀ) = ½·g·E, and
Tr(G ⊗ A) = g·m·Tr(A) for m output rows gives g = 2·(Tr(H_L)/n)/h̄ with h̄ = Tr(H)/d the mean
eigenvalue of the layer's input statistics (d inputs per row; per group for grouped convs), so

    Ω_rec(o) = (Tr(H_L) / n) · E(o) / h̄.

For an error spread evenly over input directions (round-to-nearest is close to that),
E ≈ ½·h̄·‖ΔW‖² and this is the trace model ½·(Tr(H_L)/n)·‖ΔW‖² exactly; reconstruction pushes the
error into low-energy input directions, which the trace model cannot see and this mapping prices.
It is exact when the loss is quadratic in the layer's output with isotropic curvature (a test checks
it against the measured loss change).

Statistics are collected once, on the uncompressed model, for every layer (the single-layer view:
only that layer compressed); each (layer, option) is reconstructed once and cached. Rank options
(factorised layers) are priced from the same statistics by ``ranks.FactorisedOptions``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from compress.plan.ranks import FactorisedOptions
from compress.plan.settings import plan_settings
from compress.reconstruct.layer import ReconstructSettings, reconstruct_layer
from compress.reconstruct.price import layer_objective
from compress.reconstruct.settings import reconstruct_settings
from compress.reconstruct.stats import LayerStats, collect_layer_stats
from compress.vocab.layers import compressible_layers
from compress.vocab.options import LayerOption


def deployed_settings(option: LayerOption) -> ReconstructSettings | None:
    """The reconstruction apply runs for ``option`` (translated as the plan recipe translates it),
    or None where apply does not reconstruct (float weights, magnitude-only pruning, or channel
    removal, whose narrowed weight this model does not price)."""
    if option.channel_sparsity() > 0 or option.input_sparsity > 0:
        return None
    quantization, pruning = plan_settings({"layer": option})
    return reconstruct_settings(quantization, pruning).get("layer")


def mean_eigenvalue(stats: LayerStats) -> float:
    """h̄ = Tr(H)/d, averaged over the groups of a grouped conv."""
    return float(torch.diagonal(stats.hessian, dim1=-2, dim2=-1).sum()) / (stats.groups * stats.dim)


def omega_from_error(error: float, trace: float, num_params: int, stats: LayerStats) -> float:
    """Ω = (Tr(H_L)/n)·E/h̄: a layer objective E in loss units (module docstring)."""
    return trace / num_params * error / max(mean_eigenvalue(stats), 1e-30)


@dataclass
class Reconstructions:
    """Reconstructed weights and their layer objectives per (layer, option), computed on demand from
    statistics collected once over ``batches`` (each batch's ``inputs`` fed to ``model``); cached by
the reconstruction's settings, so options differing only in activation bits share one."""

    model: nn.Module
    batches: list
    stats: dict[str, LayerStats] = field(default_factory=dict)
    weights: dict[tuple[str, ReconstructSettings], torch.Tensor] = field(default_factory=dict)
    errors: dict[tuple[str, ReconstructSettings], float] = field(default_factory=dict)
    factors: dict[str, dict] = field(default_factory=dict)  # the last layer's H factors, shared by its options
    refitted: dict = field(default_factory=dict)  # (layer, option) -> absorbed.Refitted, shared by every plan

    def __post_init__(self) -> None:
        self.factorised = FactorisedOptions(self.model, self.layer_stats, [b.inputs for b in self.batches])

    def layer_stats(self, name: str) -> LayerStats:
        if name not in self.stats:
            names = list(compressible_layers(self.model))
            self.stats.update(collect_layer_stats(self.model, (b.inputs for b in self.batches), names))
        return self.stats[name]

    def weight(self, name: str, option: LayerOption) -> torch.Tensor | None:
        """Ŵ_o as apply would write it (None: apply does not reconstruct this option)."""
        if option.rank is not None:
            return self.factorised.weight(name, option)
        settings = deployed_settings(option)
        if settings is None:
            return None
        key = (name, settings)
        if key not in self.weights:
            original = self.model.get_submodule(name).weight.detach()
            stats = self.layer_stats(name)
            if name not in self.factors:  # the planner prices a layer's options one after another
                self.factors = {name: {}}
            result = reconstruct_layer(original.double(), stats, settings, factors=self.factors[name])
            self.weights[key] = result.weight.to(original.dtype)
            self.errors[key] = layer_objective(result.weight.double() - original.double(), stats)
        return self.weights[key]

    def omega(self, name: str, option: LayerOption, trace: float, num_params: int) -> float | None:
        """Ω_rec(o) = (Tr/n)·E(o)/h̄ (module docstring); None where apply does not reconstruct."""
        if self.weight(name, option) is None:
            return None
        if option.rank is not None:
            error = self.factorised.error(name, option)
        else:
            error = self.errors[(name, deployed_settings(option))]
        return omega_from_error(error, trace, num_params, self.layer_stats(name))
