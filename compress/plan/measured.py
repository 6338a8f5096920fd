"""Measured single-layer loss increase: the check on the second-order model.

Ω's quadratic model holds near the trained weights; an aggressive option (2-bit weights of a
wide classifier layer, say) can leave that region, and then ½·(Tr/n)·‖ΔW‖² under-predicts the
damage by orders of magnitude (measured on builtin:mnist-cnn: 0.012 predicted vs 1.05 actual).
Compressing one layer at a time and evaluating the calibration loss costs one forward pass over
the data per option and catches it: the planner uses max(Ω, measured ΔL) per option.

Measurements are made lazily (``make.py``): since Ω ≤ max(Ω, ΔL), an allocation that is optimal
with measured values for its own options and Ω elsewhere is optimal for the fully measured
objective, so only the options a solve picks need measuring (a few rounds of one per layer).

The layer is compressed as apply compresses it: with the reconstructed weight (GPTQ / SparseGPT,
``reconstructed.Reconstructions``, shared with Ω so each option is reconstructed once) where apply
reconstructs the option, else rounded to nearest / magnitude-masked. With absorbed pricing
(``absorbed.py``, set by the planner as ``absorbed``), an option it prices is measured with the
layers after it re-fitted by apply's drift rule: ΔL_abs instead of the isolated ΔL.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from compress.curvature.losses import loss_function
from compress.data.source import DataSource
from compress.plan.channels import ChannelPlan
from compress.plan.reconstructed import Reconstructions
from compress.plan.sensitivity import compressed_weight
from compress.quant.weights import code_range
from compress.vocab.options import LayerOption


def mean_loss(model: nn.Module, batches: list, references: list, loss: str) -> float:
    function = loss_function(loss)
    total = sum(len(b) * float(function(model(*b.inputs), r)) for b, r in zip(batches, references))
    return total / sum(len(b) for b in batches)


def input_ranges(model: nn.Module, batches: list, names: list[str]) -> dict[str, float]:
    """max |x| over the data of each named layer's input: the min-max range of its activations."""
    from compress.plan.observe import observe_layers

    ranges = dict.fromkeys(names, 0.0)

    def record(name: str, _layer: nn.Module, x: torch.Tensor, _y: torch.Tensor) -> None:
        ranges[name] = max(ranges[name], float(x.abs().max()))

    observe_layers(model, (batch.inputs for batch in batches), names, record)
    return ranges


def quantize_input_hook(largest: float, bits: int):
    """A forward pre-hook replacing the layer's input by its symmetric per-tensor fake quantization
    with the min-max scale s = max|x| / (2^(b−1) − 1)."""
    q_min, q_max = code_range(bits)
    scale = max(largest, 1e-12) / q_max

    def hook(_module: nn.Module, inputs: tuple) -> tuple:
        return (torch.fake_quantize_per_tensor_affine(inputs[0], scale, 0, q_min, q_max), *inputs[1:])

    return hook


class SingleLayerLoss:
    """``measure(name, option)`` = L(θ with only that layer compressed by that option) − L(θ) on
    the given data, cached; an option with ``act_bits`` also quantizes the layer's input
    (min-max calibrated on the same data). Channel removal is a group's decision: it is measured
    once, at the group's first producer, as the loss change of removing the group's channels the
    way apply removes them (the masked reference ``zero_channels_``, exactly equal to removal);
    the other members are measured for their own bits and masks only.

    ``joint(options)`` measures a whole plan by applying it with apply's own code
    (``compress.apply.pipeline.apply_`` on a copy): what the deployed model's loss change is."""

    def __init__(self, model: nn.Module, data: DataSource, loss: str, batch_size: int = 256,
                 reconstruction: Reconstructions | None = None) -> None:
        from compress.curvature.prepare import reference_outputs

        self.model, self.data, self.loss, self.batch_size = model, data, loss, batch_size
        self.reconstruction = reconstruction  # None: every option rounded to nearest / magnitude-masked
        self.batches = list(data.batches(batch_size))
        with torch.no_grad():
            self.references = [reference_outputs(model, b, loss) for b in self.batches]
            self.base = mean_loss(model, self.batches, self.references, loss)
        self.isolated: dict[tuple[str, LayerOption], float] = {}  # measured with the layer alone
        self.channels: ChannelPlan | None = None  # set by the planner when it plans channel groups
        self.absorbed = None  # absorbed.AbsorbedPrices, set by the planner when it prices absorbed
        self._ranges: dict[str, float] = {}

    def __call__(self, name: str, option: LayerOption) -> float:
        if self._absorbs(option):
            return self.absorbed.delta_loss(name, option)
        key = (name, option)
        if key not in self.isolated:
            self.isolated[key] = self._measure(name, option)
        return self.isolated[key]

    def measure_all(self, wanted: list[tuple[str, LayerOption]]) -> None:
        """Measure every (layer, option) not yet cached, with a progress bar."""
        from compress.progress import progress_bar

        measured = self.cache
        missing = [key for key in dict.fromkeys(wanted) if key not in measured]
        if not missing:
            return
        with progress_bar("measuring single-layer loss changes", len(missing)) as advance:
            for name, option in missing:
                self(name, option)
                advance(1)

    def loss_change(self, model: nn.Module) -> float:
        """L(``model``) − L(θ) on the data (a modified copy of ours, in eval mode)."""
        with torch.no_grad():
            return mean_loss(model, self.batches, self.references, self.loss) - self.base

    @property
    def cache(self) -> dict[tuple[str, LayerOption], float]:
        """Every measured ΔL by (layer, option): absorbed where the planner prices absorbed
        (``absorbed``; the option's re-fit measured the loss), else isolated."""
        if self.absorbed is None:
            return self.isolated
        refitted = self.absorbed.reconstruction.refitted.items()
        return {**self.isolated, **{key: r.delta_loss for key, r in refitted if r.delta_loss is not None}}

    def _absorbs(self, option: LayerOption) -> bool:
        from compress.plan.absorbed import absorbable

        return self.absorbed is not None and absorbable(option)

    def _measure(self, name: str, option: LayerOption) -> float:
        own = replace(option, input_sparsity=0.0)
        if option.pattern == "channel":
            own = replace(own, sparsity=0.0, pattern="unstructured")
        leads = self.channels is not None and name in self.channels.groups and option.channel_sparsity() > 0
        if not leads:
            return self._compressed_loss({name: own}, reconstruct=own == option)
        from compress.prune.channels import zero_channels_

        model = copy.deepcopy(self.model)
        zero_channels_(model, self.channels.groups[name], self.channels.kept(name, option.channel_sparsity()))
        return self._compressed_loss({name: own}, model)

    def _compressed_loss(self, options: dict[str, LayerOption], model: nn.Module | None = None,
                         reconstruct: bool = False) -> float:
        """L(``model`` (default: ours) with every named layer compressed by its option, reconstructed
        as apply reconstructs it when ``reconstruct``) − L(θ)."""
        model = self.model if model is None else model
        ranges = {name: self._range(name) for name, option in options.items() if option.act_bits}
        layers = {name: model.get_submodule(name) for name in options}
        originals = {name: layer.weight.detach().clone() for name, layer in layers.items()}
        handles = []
        with torch.no_grad():
            try:
                for name, option in options.items():
                    layers[name].weight.copy_(self._weight(name, option, originals[name], reconstruct))
                    if option.act_bits:
                        hook = quantize_input_hook(ranges[name], option.act_bits)
                        handles.append(layers[name].register_forward_pre_hook(hook))
                return mean_loss(model, self.batches, self.references, self.loss) - self.base
            finally:
                for name, layer in layers.items():
                    layer.weight.copy_(originals[name])
                for handle in handles:
                    handle.remove()

    def joint(self, options: dict[str, LayerOption], act_signed: bool = True) -> float:
        """L(θ with the whole plan applied as apply applies it, activations signed or not) − L(θ)
        (not cached)."""
        from compress.apply.pipeline import ApplySpec, apply_
        from compress.plan.settings import lowrank_settings, plan_settings

        quantization, pruning = plan_settings(options, act_signed)
        model = copy.deepcopy(self.model)
        spec = ApplySpec(quantization, pruning, loss=self.loss, lowrank=lowrank_settings(options))
        apply_(model, spec, self.data, None, None, self.batch_size)
        with torch.no_grad():
            return mean_loss(model.eval(), self.batches, self.references, self.loss) - self.base

    def _weight(self, name: str, option: LayerOption, original: torch.Tensor, reconstruct: bool) -> torch.Tensor:
        """The layer's compressed weight: apply's reconstruction where there is one, else C_o(W)."""
        if reconstruct and self.reconstruction is not None:
            weight = self.reconstruction.weight(name, option)
            if weight is not None:
                return weight
        return compressed_weight(original, option)

    def _range(self, name: str) -> float:
        if name not in self._ranges:
            with torch.no_grad():
                self._ranges.update(input_ranges(self.model, self.batches, [name]))
        return self._ranges[name]
