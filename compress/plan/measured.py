"""Measured single-layer loss increase: the check on the second-order model.

Ω's quadratic model holds near the trained weights; an aggressive option (2-bit weights of a
wide classifier layer, say) can leave that region, and then ½·(Tr/n)·‖ΔW‖² under-predicts the
damage by orders of magnitude (measured on builtin:mnist-cnn: 0.012 predicted vs 1.05 actual).
Compressing one layer at a time and evaluating the calibration loss costs one forward pass over
the data per option and catches it: the planner uses max(Ω, measured ΔL) per option.
"""

from __future__ import annotations

import torch
from torch import nn

from compress.curvature.losses import loss_function
from compress.data.source import DataSource
from compress.plan.sensitivity import LayerOption, compressed_weight


def mean_loss(model: nn.Module, batches: list, references: list, loss: str) -> float:
    function = loss_function(loss)
    total = sum(len(b) * float(function(model(*b.inputs), r)) for b, r in zip(batches, references))
    return total / sum(len(b) for b in batches)


def input_ranges(model: nn.Module, batches: list, names: list[str]) -> dict[str, float]:
    """max |x| over the data of each named layer's input: the min-max range of its activations."""
    ranges = dict.fromkeys(names, 0.0)

    def record(name: str):
        def hook(_module: nn.Module, inputs: tuple) -> None:
            ranges[name] = max(ranges[name], float(inputs[0].detach().abs().max()))
        return hook

    handles = [model.get_submodule(n).register_forward_pre_hook(record(n)) for n in names]
    try:
        for batch in batches:
            model(*batch.inputs)
    finally:
        for handle in handles:
            handle.remove()
    return ranges


def quantize_input_hook(largest: float, bits: int):
    """A forward pre-hook replacing the layer's input by its symmetric per-tensor fake quantization
    with the min-max scale s = max|x| / (2^(b−1) − 1)."""
    q_max = 2 ** (bits - 1) - 1
    scale = max(largest, 1e-12) / q_max

    def hook(_module: nn.Module, inputs: tuple) -> tuple:
        return (torch.fake_quantize_per_tensor_affine(inputs[0], scale, 0, -q_max - 1, q_max), *inputs[1:])

    return hook


def measured_delta_loss(model: nn.Module, data: DataSource, loss: str,
                        options: dict[str, list[LayerOption]], batch_size: int = 256) -> dict[str, list[float]]:
    """L(θ with only layer l compressed by option o) − L(θ), for every layer and option; an option
    with ``act_bits`` also quantizes the layer's input (min-max calibrated on the same data)."""
    from compress.curvature.prepare import reference_outputs
    from compress.progress import progress_bar

    batches = list(data.batches(batch_size))
    references = [reference_outputs(model, b, loss) for b in batches]
    measured: dict[str, list[float]] = {}
    with torch.no_grad(), progress_bar("measuring single-layer loss changes", sum(map(len, options.values()))) as advance:
        base = mean_loss(model, batches, references, loss)
        needs_ranges = [n for n, opts in options.items() if any(o.act_bits for o in opts)]
        ranges = input_ranges(model, batches, needs_ranges)
        for name, layer_options in options.items():
            layer = model.get_submodule(name)
            original = layer.weight.detach().clone()
            measured[name] = []
            for option in layer_options:
                layer.weight.copy_(compressed_weight(original, option))
                handle = (layer.register_forward_pre_hook(quantize_input_hook(ranges[name], option.act_bits))
                          if option.act_bits else None)
                measured[name].append(mean_loss(model, batches, references, loss) - base)
                if handle is not None:
                    handle.remove()
                advance(1)
            layer.weight.copy_(original)
    return measured
