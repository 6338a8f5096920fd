"""The quantization verb: fold BatchNorms, swap Conv2d/Linear for fake-quantized twins in place,
calibrate the activation quantizers, and return the records the exporter writes.

``rebuild_quantized_`` turns a freshly built float model into the same structure from the records,
so a quantized model's ``state_dict`` loads into it.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from compress.errors import ConfigError, InputError
from compress.quant.bn_fold import fold_batchnorm_
from compress.quant.modules import ActQuantizer, QuantLayer, quant_layer_like
from compress.quant.placement import Placement, place_quantizers
from compress.quant.records import QuantRecords, QuantSettings
from compress.vocab.layers import is_compressible

def quantize_model_(
    model: nn.Module,
    settings: dict[str, QuantSettings],
    calibration: Iterable[torch.Tensor | tuple[torch.Tensor, ...]],
    weight_scales: dict[str, torch.Tensor] | None = None,
    weight_zero_points: dict[str, torch.Tensor] | None = None,
) -> QuantRecords:
    """In place: fold BNs, quantize the layers named in ``settings``, calibrate on ``calibration``
    (an iterable of model inputs: a tensor or a tuple of positional tensors per batch).
    ``weight_scales``: per layer, scales to hold fixed (from a reconstruction), with
    ``weight_zero_points`` for asymmetric blocks. Asymmetric blocks rounded to nearest hold the
    float weight's grid too: (max − min)/(2^b − 1) recomputed from the decoded weight of a reloaded
    checkpoint is not exact in floating point, so a grid that followed the weight would reload an
    ulp off."""
    model.eval()
    folded = fold_batchnorm_(model)
    _check_layers(model, settings)
    act_layers = {name for name, s in settings.items() if s.act_bits is not None and not s.act_dynamic}
    placements = place_quantizers(model, act_layers)
    for name, layer_settings in settings.items():
        placement = placements.get(name, Placement(None, False, False))
        layer = quant_layer_like(model.get_submodule(name), layer_settings, placement.input_from)
        if weight_scales and name in weight_scales:
            layer.fix_weight_scales(weight_scales[name], (weight_zero_points or {}).get(name))
        elif layer_settings.weight_bits is not None and not layer_settings.symmetric:
            layer.fix_weight_scales(layer.weight_scales().detach(), layer.weight_zero_points().detach())
        _attach_quantizers(layer, placement)
        model.set_submodule(name, layer)
    _calibrate(model, calibration)
    return records_of(model, tuple(folded))


def records_of(model: nn.Module, folded: tuple[tuple[str, str], ...]) -> QuantRecords:
    """The records of every quantized layer of ``model``, in module order."""
    layers = {
        name: module.record("conv" if isinstance(module, nn.Conv2d) else "linear")
        for name, module in model.named_modules()
        if isinstance(module, QuantLayer)
    }
    return QuantRecords(layers=layers, folded=folded)


def rebuild_quantized_(model: nn.Module, records: QuantRecords) -> nn.Module:
    """In place: give a freshly built float ``model`` the quantized structure in ``records``
    (folded BNs become Identity, layers become quantized twins with the recorded quantizers)."""
    for conv_name, bn_name in records.folded:
        conv = model.get_submodule(conv_name)
        if conv.bias is None:
            conv.bias = nn.Parameter(torch.zeros(conv.out_channels, dtype=conv.weight.dtype))
        model.set_submodule(bn_name, nn.Identity())
    _check_layers(model, {name: record.settings for name, record in records.layers.items()})
    for name, record in records.layers.items():
        layer = quant_layer_like(model.get_submodule(name), record.settings, record.input_from)
        if record.input is not None:
            layer.input_quantizer = ActQuantizer.from_record(record.input)
        if record.output is not None:
            layer.output_quantizer = ActQuantizer.from_record(record.output)
        if record.input_scale is not None:
            layer.input_scale.fill_(record.input_scale)
        if record.fixed_scales:
            scales = torch.tensor(record.weight_scales).reshape(layer.weight.shape[0], -1)  # [N, K/B]
            zeros = None if record.weight_zero_points is None else torch.tensor(record.weight_zero_points).reshape(scales.shape)
            layer.fix_weight_scales(scales if record.settings.weight_block is not None else scales[:, 0], zeros)
        model.set_submodule(name, layer)
    return model.eval()


def _check_layers(model: nn.Module, settings: dict[str, QuantSettings]) -> None:
    modules = dict(model.named_modules())
    for name, layer_settings in settings.items():
        if name not in modules:
            raise ConfigError(f"quantization names {name!r}, which is not a module of the model")
        if not is_compressible(modules[name]):
            raise ConfigError(f"{name} is a {type(modules[name]).__name__}; only Conv2d and Linear can be quantized")
        if layer_settings.act_bits is None and layer_settings.weight_bits is None:
            raise ConfigError(f"{name}: weight_bits and act_bits are both None; leave the layer out instead")
        linear_only = layer_settings.act_dynamic or layer_settings.weight_block is not None
        if linear_only and not isinstance(modules[name], nn.Linear):
            raise ConfigError(f"{name} is a {type(modules[name]).__name__}; act_dynamic and weight_block apply to Linear only")
        if layer_settings.weight_block is not None and modules[name].in_features % layer_settings.weight_block:
            raise ConfigError(f"{name}: input features {modules[name].in_features} are not a multiple of weight_block {layer_settings.weight_block}")


def _attach_quantizers(layer: QuantLayer, placement: Placement) -> None:
    settings = layer.settings
    if settings.act_bits is None or settings.act_dynamic:
        return
    options = (settings.act_bits, settings.act_signed, settings.calibrator, settings.percentile)
    if placement.input_from is None:
        layer.input_quantizer = ActQuantizer(*options, observe_relu=False)
    if placement.output:
        layer.output_quantizer = ActQuantizer(*options, observe_relu=placement.output_relu)


def _calibrate(model: nn.Module, calibration: Iterable[torch.Tensor | tuple[torch.Tensor, ...]]) -> None:
    """Observe every activation quantizer over all batches, fix the grids, then set each layer's
    input grid scale (its own input quantizer's, or its upstream layer's output quantizer's)."""
    quantizers = [m for m in model.modules() if isinstance(m, ActQuantizer)]
    for quantizer in quantizers:
        quantizer.start_calibration()
    num_batches = 0
    with torch.no_grad():
        for inputs in calibration:
            model(*(inputs if isinstance(inputs, (tuple, list)) else (inputs,)))
            num_batches += 1
    if quantizers and num_batches == 0:
        raise InputError("calibration data is empty; activation quantizers need at least one batch")
    for quantizer in quantizers:
        quantizer.finish_calibration()
    for layer in (m for m in model.modules() if isinstance(m, QuantLayer)):
        if not layer.static_input():
            continue
        source = layer.input_quantizer or model.get_submodule(layer.input_from).output_quantizer
        layer.input_scale.copy_(source.scale)
