"""One planned layer alone, in the variant an option deploys, written by the real exporter.

The layer is narrowed as the plan's channel option narrows it (the kept rows and columns the
planner and apply choose, ``compress.plan.channels``), wrapped with the ReLU that follows most
layers (so the int8 variant has a consumer grid to quantize to, as inside a network; an int8 variant
also gets a Flatten after it, since ORT does not fuse a ReLU → Q → DQ that ends the graph), quantized
the way apply quantizes (``compress.quant.quantize.quantize_model_``: weight-only or with 8-bit
activations — asymmetric uint8, as ORT runs them (``compress.vocab.costs.signed_activations``) —
calibrated on random inputs; a Linear reading token sequences with dynamic int8
activations, the only way the exporter writes it) and exported by ``compress.export.onnx_qdq`` —
``export_onnx`` for quantized variants, ``float_onnx`` for ``fp32``. A rank option's layer is first
replaced by its two-layer factorisation at that rank (``compress.lowrank``: Linear → two MatMuls,
Conv2d k×k → k×k conv with r outputs + 1×1 conv; factors from the plain SVD of the weight — the graph
and its kernels do not depend on which factorisation found the values). What is timed is therefore
what a deployed model runs for that layer.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from compress.plan.channels import ChannelPlan
from compress.vocab.options import LayerOption


def narrowed_layer(layer: nn.Module, rows: torch.Tensor | None, columns: torch.Tensor | None) -> nn.Module:
    """A copy of a Conv2d / Linear keeping only ``rows`` (output channels) and ``columns`` (input
    channels or features); a depthwise conv keeps ``rows`` as its groups."""
    weight = layer.weight.detach()
    bias = None if layer.bias is None else layer.bias.detach()
    if rows is not None:
        weight, bias = weight.index_select(0, rows), None if bias is None else bias.index_select(0, rows)
    if columns is not None:
        weight = weight.index_select(1, columns)
    if isinstance(layer, nn.Linear):
        copy = nn.Linear(weight.shape[1], weight.shape[0], bias is not None)
    else:
        depthwise = layer.groups > 1 and layer.groups == layer.in_channels
        groups = weight.shape[0] if depthwise else layer.groups
        copy = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], layer.kernel_size, layer.stride,
                         layer.padding, layer.dilation, groups, bias is not None, layer.padding_mode)
    with torch.no_grad():
        copy.weight.copy_(weight)
        if bias is not None:
            copy.bias.copy_(bias)
    return copy.eval()


def input_width(layer: nn.Module) -> int:
    """The size of the input axis a layer reads its channels / features on."""
    return layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels


def factorised_layer(layer: nn.Module, rank: int | None) -> nn.Module:
    """``layer`` itself (rank None), or its rank-``rank`` factorisation as apply writes it (two
    layers, plain truncated SVD factors)."""
    if rank is None:
        return layer
    from compress.lowrank.apply import factorise_layer
    from compress.lowrank.settings import LowRankSettings

    return factorise_layer(layer, LowRankSettings(rank=rank, method="svd"), rank, None, None)[0].eval()


def export_variant(layer: nn.Module, option: LayerOption, input_shape: tuple[int, ...], path: Path) -> Path:
    """Write ``layer`` (already narrowed) under ``option`` as the exporter writes it, for inputs of
    ``input_shape`` (batch first; the channel axis is 1 for convs, the last for linears); a rank
    option's layer factorised, both factors quantized as the option says."""
    from compress.export.onnx_qdq import export_onnx, float_onnx
    from compress.lowrank.modules import factor_names
    from compress.quant.quantize import quantize_model_
    from compress.quant.records import QuantSettings
    from compress.vocab.costs import signed_activations

    shape = list(input_shape)
    shape[-1 if isinstance(layer, nn.Linear) else 1] = input_width(layer)
    example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    deployed = factorised_layer(layer, option.rank)
    model = nn.Sequential(deployed, nn.ReLU()).eval()
    if option.bits is None:
        import onnx

        from compress.atomic import atomic_path

        with atomic_path(path) as partial:
            onnx.save(float_onnx(model, (example,)), partial)
        return path
    settings = QuantSettings(weight_bits=option.bits, act_bits=option.act_bits,
                             act_signed=signed_activations("ort-cpu"))
    if option.act_bits is not None:  # ORT leaves ReLU → Q → DQ unfused where it ends the graph; inside a
        model = nn.Sequential(deployed, nn.ReLU(), nn.Flatten()).eval()  # network an op follows it
    if isinstance(layer, nn.Linear) and len(shape) > 2:  # the exporter writes token-wise linears only as
        settings = QuantSettings(option.bits, act_bits=8, act_signed=False, act_dynamic=True)  # integer MatMuls
    quantize_model_(model, dict.fromkeys(("0",) if option.rank is None else factor_names("0"), settings), [example])
    return export_onnx(model, (example,), path, target="ort")


def variant_files(model: nn.Module, channels: ChannelPlan, name: str, option: LayerOption,
                  input_shape: tuple[int, ...], folder: Path) -> Path:
    """Export the variant of layer ``name`` that ``option`` deploys into ``folder``."""
    rows, columns = channels.kept_rows_columns(name, option)
    layer = narrowed_layer(model.get_submodule(name), rows, columns)
    path = folder / f"{name.replace('.', '_') or 'model'}--{abs(hash(option))}.onnx"
    return export_variant(layer, option, input_shape, path)
